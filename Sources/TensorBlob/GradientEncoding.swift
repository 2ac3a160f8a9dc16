/// How a worker stores its gradient chunks: dense elements of a dtype under a codec, or the
/// top-k elements as a sparse-lz4 blob. Written as a spec string on the command line:
///
/// - `CODEC` or `DTYPE-CODEC`: dense, e.g. `raw`, `shuffle-lz4`, `bf16-shuffle-lz4` (dtype
///   `f32`, `f16` or `bf16`, f32 when omitted; codec `raw`, `lz4`, `shuffle-lz4` or `sparse-lz4`).
/// - `DTYPE` alone: dense with codec raw, e.g. `bf16` (`bf16-raw`).
/// - `topk:FRACTION` or `DTYPE-topk:FRACTION`: the `ceil(FRACTION × n)` elements of largest
///   magnitude of each chunk, `0 < FRACTION ≤ 1`, e.g. `topk:0.01`, `bf16-topk:0.1`.
public enum GradientEncoding: Sendable, Equatable, CustomStringConvertible {
    case dense(DType, BlobCodec)
    case topK(fraction: Double, dtype: DType)

    /// Parses a spec string (see the type's description).
    /// - Throws: `GradientEncodingError` naming the spec and what is wrong with it: an unknown
    ///   dtype or codec (`.unknownEncoding`), or a fraction that is not a number in (0, 1]
    ///   (`.invalidFraction`).
    public init(parsing spec: String) throws(GradientEncodingError) {
        if let colon = spec.firstIndex(of: ":") {
            let name = String(spec[..<colon])
            let number = String(spec[spec.index(after: colon)...])
            let dtype: DType
            if name == "topk" {
                dtype = .f32
            } else if name.hasSuffix("-topk"), let d = DType(name: String(name.dropLast(5))) {
                dtype = d
            } else {
                throw GradientEncodingError(
                    .unknownEncoding, "unknown gradient encoding '\(spec)': \(Self.grammar)")
            }
            guard let fraction = Double(number), number.allSatisfy({ "0123456789.eE+-".contains($0) }) else {
                throw GradientEncodingError(
                    .invalidFraction, "top-k fraction '\(number)' in '\(spec)' is not a number; use e.g. topk:0.01")
            }
            do { try TopK.check(fraction) } catch {
                throw GradientEncodingError(.invalidFraction, "'\(spec)': \(error.message)")
            }
            self = .topK(fraction: fraction, dtype: dtype)
            return
        }
        if let codec = BlobCodec(name: spec) {
            self = .dense(.f32, codec)
            return
        }
        if let dtype = DType(name: spec) {
            self = .dense(dtype, .raw)
            return
        }
        if let dash = spec.firstIndex(of: "-"), let dtype = DType(name: String(spec[..<dash])),
            let codec = BlobCodec(name: String(spec[spec.index(after: dash)...]))
        {
            self = .dense(dtype, codec)
            return
        }
        throw GradientEncodingError(.unknownEncoding, "unknown gradient encoding '\(spec)': \(Self.grammar)")
    }

    static let grammar =
        "expected [DTYPE-]CODEC, DTYPE or [DTYPE-]topk:FRACTION, with DTYPE f32, f16 or bf16, CODEC \(BlobCodec.names), and 0 < FRACTION ≤ 1"

    /// The spec string, as `init(parsing:)` reads it (the dtype only when it is not f32).
    public var description: String {
        switch self {
        case .dense(let d, let c): d == .f32 ? "\(c)" : "\(d)-\(c)"
        case .topK(let f, let d): d == .f32 ? "topk:\(f)" : "\(d)-topk:\(f)"
        }
    }

    /// The dtype of the blobs.
    public var dtype: DType {
        switch self {
        case .dense(let d, _), .topK(_, let d): d
        }
    }

    /// Whether the servers read other values than the worker had (rounded to f16 or bf16, or
    /// only the top k of each chunk): a worker then keeps the difference (error feedback).
    public var isLossy: Bool {
        switch self {
        case .dense(let d, _): d != .f32
        case .topK(let f, let d): d != .f32 || f < 1
        }
    }

    /// The codec of the gradient blobs: sparse-lz4 for top-k.
    public var codec: BlobCodec {
        switch self {
        case .dense(_, let c): c
        case .topK: .sparseLZ4
        }
    }

    /// The same encoding with blobs of `dtype`.
    public func with(dtype: DType) -> GradientEncoding {
        switch self {
        case .dense(_, let c): .dense(dtype, c)
        case .topK(let f, _): .topK(fraction: f, dtype: dtype)
        }
    }

    /// A gradient chunk's blob in this encoding.
    public func encode(_ values: UnsafeBufferPointer<Float>, step: UInt64, producer: UInt32) -> [UInt8] {
        switch self {
        case .dense(let d, let c):
            return TensorBlob.encode(values, dtype: d, codec: c, step: step, producer: producer)
        case .topK(let f, let d):
            guard let k = try? TopK.count(of: values.count, fraction: f) else {
                preconditionFailure("top-k fraction \(f) is outside (0, 1]; make encodings with init(parsing:)")
            }
            let indices = TopK.select(values, k: k)
            let sparse = SparseGradient(
                checked: values.count, indices: indices, values: indices.map { values[Int($0)] })
            return TensorBlob.encode(sparse, dtype: d, step: step, producer: producer)
        }
    }
}
