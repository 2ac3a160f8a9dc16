/// Element types a blob can carry. Values are always given and returned as f32: `f16` and
/// `bf16` blobs store them rounded to nearest even (docs/wire-format.md), and a reader treats
/// their elements as the f32 values they decode to.
public enum DType: UInt8, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case f32 = 0
    /// IEEE 754 binary16: 11 significant bits, finite values up to 65504.
    case f16 = 1
    /// bfloat16: the top half of an f32 (8 significant bits, f32's range).
    case bf16 = 2

    public var byteWidth: Int { self == .f32 ? 4 : 2 }

    public var description: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        case .bf16: "bf16"
        }
    }

    /// Parses the names `f32`, `f16` and `bf16`.
    public init?(name: String) {
        guard let d = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = d
    }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let d = DType(name: name) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "unknown dtype '\(name)' (f32, f16, bf16)"))
        }
        self = d
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// How a blob's payload is encoded.
public enum BlobCodec: UInt8, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// The little-endian element bytes as they are.
    case raw = 0
    /// LZ4 block compression of the element bytes.
    case lz4 = 1
    /// Byte shuffle by element width (Blosc's filter), then LZ4.
    case shuffleLZ4 = 2
    /// Only some elements, as (index, value) pairs: delta-coded indices and the values, in one
    /// LZ4 block; every other element is zero. Lossless as a codec (the writer keeps every
    /// element that is not +0); top-k gradients (`SparseGradient.topK`) are blobs of this codec.
    case sparseLZ4 = 3
    /// Bit shuffle (every bit of an element byte to its own bit plane), then LZ4: a gradient's
    /// sign and exponent bits, which change little, become long runs LZ4 shrinks to almost
    /// nothing (docs/wire-format.md, "Codecs").
    case bitshuffleLZ4 = 4

    public var description: String {
        switch self {
        case .raw: "raw"
        case .lz4: "lz4"
        case .shuffleLZ4: "shuffle-lz4"
        case .sparseLZ4: "sparse-lz4"
        case .bitshuffleLZ4: "bitshuffle-lz4"
        }
    }

    /// The names `init(name:)` accepts, for error messages.
    public static let names = allCases.map(\.description).joined(separator: ", ")

    /// Parses the names used on the command line and in job specs.
    public init?(name: String) {
        guard let c = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = c
    }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let c = BlobCodec(name: name) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath, debugDescription: "unknown codec '\(name)' (\(BlobCodec.names))")
            )
        }
        self = c
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// The fixed 48-byte header in front of every tensor blob (see docs/wire-format.md).
public struct BlobHeader: Sendable, Equatable {
    public static let size = 48
    public static let magic: [UInt8] = Array("SMLT".utf8)
    public static let formatVersion: UInt8 = 1
    /// Producer id used by the parameter server (workers use their worker id).
    public static let serverProducer: UInt32 = 0xFFFF_FFFF

    public var dtype: DType
    public var codec: BlobCodec
    public var count: UInt64
    public var step: UInt64
    public var producer: UInt32
    public var payloadLength: UInt64
    public var checksum: UInt32

    /// Bytes of the stored elements (`count` × the dtype's width) before compression.
    public var rawByteCount: Int { Int(count) * dtype.byteWidth }
}
