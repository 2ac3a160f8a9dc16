import Foundation
import Logging

/// Writes `PREFIX message` lines to standard error (`PREFIX warning: message` from warning up);
/// the identifiers are in the messages themselves, so metadata is not repeated.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let prefix: String

    public init(prefix: String) { self.prefix = prefix }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let severity = event.level >= .warning ? "\(event.level): " : ""
        // One write per line, so lines from several threads do not interleave.
        FileHandle.standardError.write(Data("\(prefix) \(severity)\(event.message)\n".utf8))
    }
}
