import ArgumentParser
import Foundation
import Logging
import Observability

/// `--metrics-port`, `--metrics-bind`, `--log-format` and `--log-level` of `smlt serve`.
struct ObservabilityOptionGroup: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Serve Prometheus metrics at http://BIND:PORT/metrics (default: $SMLT_METRICS_PORT; none).",
            valueName: "port"))
    var metricsPort: Int?

    @Option(help: "The address the metrics endpoint listens on (0.0.0.0 or :: for every interface).")
    var metricsBind = "127.0.0.1"

    @Option(help: "Log as text lines or as JSON lines (one object a line): text or json.")
    var logFormat: LogFormat = .text

    @Option(help: "The lowest level logged: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    /// The port to serve metrics on, or nil for none.
    func resolvedMetricsPort() throws -> Int? {
        let text = metricsPort.map(String.init) ?? ProcessInfo.processInfo.environment["SMLT_METRICS_PORT"]
        guard let text, !text.isEmpty else { return nil }
        guard let port = Int(text), (0...65535).contains(port) else {
            throw ValidationError("--metrics-port must be from 0 to 65535, got \(text)")
        }
        return port
    }

    func validate() throws { _ = try resolvedMetricsPort() }

    func logger(label: String, prefix: String) -> Logger {
        logFormat.logger(label: label, prefix: prefix, level: logLevel)
    }
}

extension LogFormat: ExpressibleByArgument {}

extension Logger.Level: @retroactive ExpressibleByArgument {}
