import Logging

/// How `smlt serve` writes its log: `text` (a line per event, as before) or `json` (one JSON
/// object a line, with every metadata field).
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json

    /// A logger labelled `label` that writes in this format to standard error at `level` and above.
    /// - Parameters:
    ///   - prefix: what starts each text line, such as `[serve]`.
    public func logger(label: String, prefix: String, level: Logger.Level) -> Logger {
        var logger = Logger(label: label) { label in
            switch self {
            case .text: TextLogHandler(prefix: prefix)
            case .json: JSONLinesLogHandler(label: label)
            }
        }
        logger.logLevel = level
        return logger
    }
}
