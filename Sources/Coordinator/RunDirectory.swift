import Foundation

/// A run's private scratch directory (`smlt-run-*` in the system temporary directory): logs,
/// the functions' local cache and default checkpoints. Created 0700, so other local users
/// cannot read the cached training data; removed when the run ends, also on Ctrl-C.
public struct RunDirectory: Sendable {
    public let path: String

    public init() throws {
        var template = Array((NSTemporaryDirectory() + "smlt-run-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else {
            throw RequestError(
                "cannot create a run directory in \(NSTemporaryDirectory()): \(String(cString: strerror(errno)))")
        }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes the directory and everything in it.
    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
