import Testing

/// The suites that run whole `smlt` processes (training runs, shutdowns, the benchmark): one at a
/// time, so that their timing-sensitive parts (400 ms function time limits, lease expiry) do not
/// compete for the 2 cores with each other. Lighter suites still run beside them.
@Suite(.serialized) enum EndToEnd {}
