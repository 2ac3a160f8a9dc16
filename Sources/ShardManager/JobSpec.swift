import TensorBlob

/// A named tensor and its shape; its elements take a contiguous range of the flat parameter space.
public struct TensorSpec: Codable, Sendable, Equatable {
    public var name: String
    public var shape: [Int]

    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }

    public var count: Int { shape.reduce(1, *) }
}

/// What a job declares: its id, its tensors, how big chunks are and how they are encoded.
/// Read from a JSON job spec such as
/// `{"job": "digits", "chunk_elements": 262144, "codec": "raw", "tensors": [{"name": "w", "shape": [64, 10]}]}`.
public struct JobSpec: Codable, Sendable, Equatable {
    public var job: String
    public var tensors: [TensorSpec]
    public var chunkElements: Int
    public var codec: BlobCodec
    /// The low-precision copy of each parameter version that workers pull, if the job keeps one.
    public var pullEncoding: PullEncoding?

    public static let defaultChunkElements = 262_144

    public init(
        job: String, tensors: [TensorSpec], chunkElements: Int = defaultChunkElements, codec: BlobCodec = .raw,
        pullEncoding: PullEncoding? = nil
    ) {
        self.job = job
        self.tensors = tensors
        self.chunkElements = chunkElements
        self.codec = codec
        self.pullEncoding = pullEncoding
    }

    enum CodingKeys: String, CodingKey {
        case job, tensors, codec
        case chunkElements = "chunk_elements"
        case pullEncoding = "pull_encoding"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        job = try c.decode(String.self, forKey: .job)
        tensors = try c.decode([TensorSpec].self, forKey: .tensors)
        chunkElements = try c.decodeIfPresent(Int.self, forKey: .chunkElements) ?? Self.defaultChunkElements
        codec = try c.decodeIfPresent(BlobCodec.self, forKey: .codec) ?? .raw
        pullEncoding = try c.decodeIfPresent(PullEncoding.self, forKey: .pullEncoding)
    }

    /// The codec of a job's parameter and optimizer blobs for gradients of `encoding`, as
    /// `smlt train --codec` registers a job: the encoding's codec when it is a dense f32 one; raw
    /// for top-k (dense parameters have few +0 elements) and for bf16 and f16 encodings, whose
    /// f32 parameters are only the servers' master copy (workers pull the pull copy).
    public static func parameterCodec(for encoding: GradientEncoding) -> BlobCodec {
        if case .dense(.f32, let c) = encoding, c != .sparseLZ4 { return c }
        return .raw
    }

    /// Checks names, shapes and sizes; throws a message naming the first problem.
    public func validate() throws(ShardError) {
        try Self.validateJobName(job)
        guard !tensors.isEmpty else { throw ShardError(.invalidSpec, "job '\(job)' declares no tensors") }
        guard chunkElements >= 1, chunkElements <= 1 << 26 else {
            throw ShardError(.invalidSpec, "chunk_elements must be from 1 to \(1 << 26), got \(chunkElements)")
        }
        var seen = Set<String>()
        for t in tensors {
            guard !t.name.isEmpty, seen.insert(t.name).inserted else {
                throw ShardError(.invalidSpec, "tensor names must be non-empty and unique ('\(t.name)')")
            }
            guard !t.shape.isEmpty, t.shape.allSatisfy({ $0 >= 1 && $0 <= 1 << 31 }) else {
                throw ShardError(.invalidSpec, "tensor '\(t.name)' has an invalid shape \(t.shape)")
            }
            let (n, overflow) = t.shape.reduce((1, false)) { acc, d in
                let (m, o) = acc.0.multipliedReportingOverflow(by: d)
                return (m, acc.1 || o)
            }
            guard !overflow, n <= 1 << 34 else {
                throw ShardError(.invalidSpec, "tensor '\(t.name)' is too large (\(t.shape))")
            }
        }
    }

    /// Job ids become part of Redis keys: letters, digits, `_`, `-` and `.`, at most 64.
    public static func validateJobName(_ job: String) throws(ShardError) {
        let ok =
            !job.isEmpty && job.utf8.count <= 64
            && job.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
                    || c == 0x2D || c == 0x2E
            }
        guard ok else {
            throw ShardError(.invalidSpec, "job id '\(job)' must be 1-64 characters of A-Z a-z 0-9 _ - .")
        }
    }
}
