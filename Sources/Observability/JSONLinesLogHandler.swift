import Foundation
import Logging

/// Writes one JSON object per line to standard error: `time` (UTC, ISO 8601 with milliseconds),
/// `level`, `logger`, `message`, then every metadata field (strings; nested lists and objects
/// as such). A metadata field named like one of the first four is written as `meta_NAME`.
public struct JSONLinesLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        FileHandle.standardError.write(Data(Self.line(event, label: label, handlerMetadata: metadata).utf8))
    }

    /// The line for `event`, newline included.
    static func line(_ event: LogEvent, label: String, handlerMetadata: Logger.Metadata, now: Date = Date()) -> String {
        var all = handlerMetadata
        if let m = event.metadata { all.merge(m) { _, new in new } }
        var out = "{\"time\":\(quoted(timestamp(now))),\"level\":\(quoted(event.level.rawValue))"
        out += ",\"logger\":\(quoted(label)),\"message\":\(quoted("\(event.message)"))"
        for key in all.keys.sorted() {
            let name = ["time", "level", "logger", "message"].contains(key) ? "meta_\(key)" : key
            out += ",\(quoted(name)):\(json(all[key]!))"
        }
        return out + "}\n"
    }

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): quoted(s)
        case .stringConvertible(let c): quoted(c.description)
        case .array(let a): "[" + a.map(json).joined(separator: ",") + "]"
        case .dictionary(let d):
            "{" + d.keys.sorted().map { "\(quoted($0)):\(json(d[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    /// `s` as a JSON string: quotes, backslashes and control characters escaped.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// `2025-01-31T12:00:00.123Z`.
    static func timestamp(_ date: Date) -> String {
        let ms = Int((date.timeIntervalSince1970 * 1000).rounded(.down))
        var t = time_t(ms / 1000)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), ms % 1000)
    }
}
