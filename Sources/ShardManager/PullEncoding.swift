import TensorBlob

/// How the low-precision copy of each published parameter version is stored, when a job keeps
/// one for its workers' pulls (docs/wire-format.md, "The pull copy").
///
/// The servers keep the f32 parameters (`params`) as the master copy, and every write of a
/// version also writes each chunk's values rounded to `dtype` under `pull`, which workers read
/// instead: half the bytes of every pull, at the price of computing gradients on rounded
/// weights. Written in a map as a dense encoding spec of a 2-byte dtype, e.g. `"bf16"` or
/// `"bf16-shuffle-lz4"`.
public struct PullEncoding: Codable, Sendable, Equatable, CustomStringConvertible {
    public let dtype: DType
    public let codec: BlobCodec

    /// A pull copy of a 2-byte `dtype` (`bf16` or `f16`) under a dense `codec`.
    /// - Throws: `ShardError(.invalidSpec)` for f32 (no smaller than `params`) or sparse-lz4.
    public init(dtype: DType, codec: BlobCodec) throws(ShardError) {
        guard dtype != .f32 else {
            throw ShardError(.invalidSpec, "a pull copy must be bf16 or f16; f32 is what params already holds")
        }
        guard codec != .sparseLZ4 else {
            throw ShardError(.invalidSpec, "a pull copy is dense: codec raw, lz4 or shuffle-lz4, not sparse-lz4")
        }
        self.dtype = dtype
        self.codec = codec
    }

    /// Parses a spec such as `bf16`, `bf16-raw` or `f16-shuffle-lz4`.
    /// - Throws: `ShardError(.invalidSpec)` naming the spec and what is wrong with it.
    public init(parsing spec: String) throws(ShardError) {
        let encoding: GradientEncoding
        do { encoding = try GradientEncoding(parsing: spec) } catch {
            throw ShardError(.invalidSpec, "pull encoding '\(spec)': \(error.message)")
        }
        guard case .dense(let dtype, let codec) = encoding else {
            throw ShardError(.invalidSpec, "pull encoding '\(spec)' is not dense; use e.g. bf16 or bf16-shuffle-lz4")
        }
        do { try self.init(dtype: dtype, codec: codec) } catch {
            throw ShardError(.invalidSpec, "pull encoding '\(spec)': \(error.message)")
        }
    }

    /// The pull copy that goes with gradients of `encoding` by default: the same dtype and codec
    /// for a dense bf16 or f16 encoding, so that pulls shrink as pushes do; none for f32 and top-k.
    public static func matching(_ encoding: GradientEncoding) -> PullEncoding? {
        guard case .dense(let d, let c) = encoding else { return nil }
        return try? PullEncoding(dtype: d, codec: c)
    }

    /// The pull copy a `--pull` option asks for next to gradients of `encoding`: nil (the
    /// option not given) means `matching(encoding)`, `f32` none, anything else a spec.
    /// - Throws: `ShardError(.invalidSpec)` for a spec that is not a pull copy's.
    public static func chosen(by option: String?, for encoding: GradientEncoding) throws(ShardError) -> PullEncoding? {
        guard let option else { return matching(encoding) }
        return option == "f32" ? nil : try PullEncoding(parsing: option)
    }

    /// The spec in canonical form, `DTYPE-CODEC` (e.g. `bf16-raw`).
    public var description: String { "\(dtype)-\(codec)" }

    public init(from decoder: any Decoder) throws {
        let spec = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: spec) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
