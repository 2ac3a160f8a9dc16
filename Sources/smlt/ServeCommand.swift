import ArgumentParser
import Foundation
import LocalProcesses
import Logging
import Observability
import ParamServer
import Prometheus

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run a parameter server that aggregates every job on the given shards (BSP).",
        discussion: """
            Runs until SIGINT or SIGTERM. One thread per shard; it blocks in BLPOP between steps.
            With --metrics-port it serves Prometheus metrics at http://127.0.0.1:PORT/metrics \
            (--metrics-bind to listen elsewhere).
            """)

    @OptionGroup var redis: RedisOptionGroup
    @OptionGroup var observability: ObservabilityOptionGroup

    func run() throws {
        let endpoints = try redis.endpoints()
        let logger = observability.logger(label: "smlt.serve", prefix: "[serve]")
        var metrics = ServerMetrics.off
        var endpoint: MetricsEndpoint?
        if let port = try observability.resolvedMetricsPort() {
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.durationHistogramBuckets[ServerMetrics.Name.stepSeconds] = ServerMetrics.stepSecondsBuckets
            metrics = ServerMetrics(factory: factory)
            do {
                let e = try MetricsEndpoint(registry: registry, host: observability.metricsBind, port: port)
                endpoint = e
                logger.info(
                    "metrics at http://\(e.address)/metrics",
                    metadata: ["event": "metrics_listening", "address": "\(e.address)"])
            } catch {
                // Asked for on the command line: an operator must fix it. Given by smlt train
                // (SMLT_METRICS_PORT): training matters more, and a restart would fail the same way.
                guard observability.metricsPort == nil else {
                    logger.critical("\(error)", metadata: ["event": "server_stop", "reason": "\(error)"])
                    throw ExitCode(1)
                }
                logger.error(
                    "\(error); serving without metrics", metadata: ["event": "metrics_failed", "reason": "\(error)"])
                metrics = .off
            }
        }
        let server = ParamServer(endpoints: endpoints, options: redis.options, logger: logger, metrics: metrics)
        ChildRegistry.installSignalHandlers()
        let served = server.run()
        endpoint?.stop()
        // A shard loop that could not start stopped the server (logged): an error, not a clean exit.
        guard served else { throw ExitCode(1) }
    }
}
