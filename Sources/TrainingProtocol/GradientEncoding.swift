import TensorBlob

/// How a job's workers encode the gradients they push: the config's `gradient_encoding`
/// (docs/wire-format.md, "Training config" and "Error feedback").
///
/// A spec is `CODEC` (`raw`, `lz4`, `shuffle-lz4`: f32 elements), `DTYPE` (`f32`, `bf16`, `f16`:
/// that element type, codec raw) or `DTYPE-CODEC` (`bf16-shuffle-lz4`). A lossy encoding (bf16,
/// f16) is used with error feedback: what rounding took off one step's gradient is added to the
/// next one's.
public struct GradientEncoding: Sendable, Hashable, CustomStringConvertible {
    /// The element type of the pushed gradient blobs.
    public let dtype: DType
    /// The codec of the pushed gradient blobs.
    public let codec: BlobCodec

    /// f32 elements with `codec`: lossless, no error feedback.
    public init(dtype: DType = .f32, codec: BlobCodec) {
        self.dtype = dtype
        self.codec = codec
    }

    /// Parses a spec; the error names the spec and what is wrong with it.
    public init(parsing spec: String) throws(GradientEncodingError) {
        if let codec = BlobCodec(name: spec) {
            self.init(dtype: .f32, codec: codec)
            return
        }
        if let dtype = DType(name: spec) {
            self.init(dtype: dtype, codec: .raw)
            return
        }
        for dtype in DType.allCases {
            let prefix = dtype.description + "-"
            guard spec.hasPrefix(prefix) else { continue }
            let rest = String(spec.dropFirst(prefix.count))
            guard let codec = BlobCodec(name: rest) else {
                throw GradientEncodingError(spec: spec, "unknown codec '\(rest)' after '\(prefix)'")
            }
            self.init(dtype: dtype, codec: codec)
            return
        }
        throw GradientEncodingError(spec: spec, "not an encoding")
    }

    /// The canonical spec: `lz4` for f32 with lz4, `bf16-raw`, `bf16-shuffle-lz4`.
    public var description: String { dtype == .f32 ? codec.description : "\(dtype)-\(codec)" }

    /// Whether the servers read other values than the worker pushed (so error feedback applies).
    public var isLossy: Bool { dtype != .f32 }

    /// The values the servers will read for `values`, written to `sent` (which may be `values`).
    public func sent(_ values: UnsafeBufferPointer<Float>, into sent: UnsafeMutableBufferPointer<Float>) {
        dtype.round(values, into: sent)
    }

    /// The specs `smlt train --codec` lists in its help and errors.
    public static let examples = "raw, lz4, shuffle-lz4, bf16, f16, bf16-shuffle-lz4, f16-shuffle-lz4"
}

/// A gradient encoding spec that cannot be used.
public struct GradientEncodingError: Error, Sendable, CustomStringConvertible {
    /// The spec as given.
    public let spec: String
    /// What is wrong with it.
    public let reason: String

    init(spec: String, _ reason: String) {
        self.spec = spec
        self.reason = reason
    }

    public var description: String {
        "gradient encoding '\(spec)': \(reason) (use one of \(GradientEncoding.examples))"
    }
}
