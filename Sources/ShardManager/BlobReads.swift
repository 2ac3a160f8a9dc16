import RedisClient
import TensorBlob

/// Why one blob read by `getBlobs` could not be used.
public enum BlobReadFailure: Error, Sendable, CustomStringConvertible {
    /// The key does not exist.
    case missing
    /// The server answered the GET with an error reply.
    case serverError(String)
    /// The reply was not a bulk string.
    case unexpected(String)
    /// The blob is damaged (header, sizes, checksum, payload) or `check` refused its header.
    case invalid(TensorBlobError)

    public var description: String {
        switch self {
        case .missing: "missing"
        case .serverError(let m): "server error: \(m)"
        case .unexpected(let m): "unexpected reply \(m)"
        case .invalid(let e): e.description
        }
    }
}

extension RedisConnection {
    /// GETs the blobs at `keys` in one pipeline and decodes each straight from the socket into
    /// `destination(i)` (which must hold the blob's element count), checking its header and
    /// checksum. The one reader behind model pulls, the servers' gradient reads and the
    /// benchmark's baselines.
    ///
    /// - Parameters:
    ///   - check: may refuse a blob by its header before the payload is read (the payload is
    ///     then skipped on the wire).
    ///   - decoded: runs, in key order, once blob `i` is verified and in `destination(i)`.
    ///   - pairs: with `true`, a sparse-lz4 blob is not decoded into `destination(i)`: once
    ///     verified, its pairs go to `sparse` instead of `decoded` (to be added into a sum).
    /// - Returns: the failures by key index. A failure does not stop the other reads, so the
    ///   connection stays in step; only a connection error throws.
    public func getBlobs(
        _ keys: [String], scratch: DecodeScratch,
        into destination: (Int) -> UnsafeMutableBufferPointer<Float>,
        check: (Int, BlobHeader) throws(TensorBlobError) -> Void = { _, _ in },
        decoded: (Int, BlobHeader) -> Void = { _, _ in },
        pairs: Bool = false, sparse: (Int, BlobHeader, SparseGradient) -> Void = { _, _, _ in }
    ) throws(RedisError) -> [Int: BlobReadFailure] {
        var failures: [Int: BlobReadFailure] = [:]
        var pending: BlobHeader?
        try pipelineStreaming(
            keys.map { RedisCommand("GET", $0) }, prefixLength: BlobHeader.size,
            target: { i, prefix, rest in
                do throws(TensorBlobError) {
                    let (h, payload) = try TensorBlob.payloadTarget(
                        prefix: prefix, blobLength: prefix.count + rest, destination: destination(i), scratch: scratch)
                    try check(i, h)
                    pending = h
                    return payload
                } catch {
                    failures[i] = .invalid(error)
                    return nil
                }
            },
            done: { i, reply in
                defer { pending = nil }
                switch reply {
                case .bulk(let prefix, let rest):
                    // Without `rest`, `target` refused the blob and recorded why.
                    guard let rest, let h = pending else { return }
                    do throws(TensorBlobError) {
                        if pairs && h.codec == .sparseLZ4 {
                            let s = try TensorBlob.finishDecodeSparse(
                                h, prefix: prefix, payload: UnsafeRawBufferPointer(rest), scratch: scratch)
                            return sparse(i, h, s)
                        }
                        try TensorBlob.finishDecode(
                            h, prefix: prefix, payload: UnsafeRawBufferPointer(rest), into: destination(i),
                            scratch: scratch)
                        decoded(i, h)
                    } catch { failures[i] = .invalid(error) }
                case .null: failures[i] = .missing
                case .error(let m): failures[i] = .serverError(m)
                case .unexpected(let m): failures[i] = .unexpected(m)
                }
            })
        return failures
    }
}
