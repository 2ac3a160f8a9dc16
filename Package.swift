// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "SMLT",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "smlt", targets: ["smlt"]),
        .executable(name: "smlt-bench", targets: ["smlt-bench"]),
        .library(name: "FunctionClient", targets: ["FunctionClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // Observability: the metrics and logging APIs (ParamServer uses only these), the Prometheus
        // backend, and a small HTTP server for /metrics (docs/design.md, "Observability").
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.1"),
    ],
    targets: [
        // C surface only: system libraries and a few hot loops.
        .systemLibrary(
            name: "CHiredis", pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(
            name: "CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]),
        .target(
            name: "CTensorKernels",
            cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "CProcessSpawn"),

        // Safe Swift over the C surface.
        .target(name: "RedisClient", dependencies: ["CHiredis"], swiftSettings: strict),
        .target(name: "LocalProcesses", dependencies: ["RedisClient", "CProcessSpawn"], swiftSettings: strict),
        .target(name: "TensorBlob", dependencies: ["CLZ4", "CTensorKernels"], swiftSettings: strict),

        // The parameter server's roles.
        .target(name: "KeySchema", swiftSettings: strict),
        .target(name: "ShardManager", dependencies: ["KeySchema", "RedisClient", "TensorBlob"], swiftSettings: strict),
        .target(name: "TrainingProtocol", dependencies: ["KeySchema", "ShardManager"], swiftSettings: strict),
        // The SDK a worker function imports: one module, nothing of the layers below in its API.
        .target(
            name: "FunctionClient", dependencies: ["TrainingProtocol", "ShardManager", "RedisClient", "TensorBlob"],
            swiftSettings: strict),
        .target(
            name: "ParamServer",
            dependencies: [
                "KeySchema", "TrainingProtocol", "CTensorKernels",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),
        // Prometheus text at /metrics over HTTP, and the text and JSON-lines log formats.
        .target(
            name: "Observability",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "FlyingFox", package: "FlyingFox"),
            ],
            swiftSettings: strict),
        .target(name: "Workloads", swiftSettings: strict),
        // Chooses workers × shards × memory for a deadline or a budget; pure, no I/O.
        .target(name: "Planner", swiftSettings: strict),
        // A simulated serverless platform and the baselines the planner is evaluated against.
        .target(name: "PlannerSimulation", dependencies: ["Planner"], swiftSettings: strict),
        // The built-in models as a worker function on the SDK: what `smlt worker` runs.
        .target(
            name: "BuiltinWorker", dependencies: ["FunctionClient", "TrainingProtocol", "Workloads"],
            swiftSettings: strict),
        .target(
            name: "Checkpoints", dependencies: ["ShardManager", "TrainingProtocol", "TensorBlob", "RedisClient"],
            swiftSettings: strict),
        .target(
            name: "Scheduler",
            dependencies: ["TrainingProtocol", "RedisClient", "LocalProcesses", "Planner"],
            swiftSettings: strict),
        // Runs one job end to end; the CLI and a planner drive it.
        .target(
            name: "Coordinator",
            dependencies: [
                "Scheduler", "Checkpoints", "ParamServer", "TrainingProtocol", "ShardManager", "KeySchema", "Workloads",
                "LocalProcesses", "RedisClient", "TensorBlob", "Planner",
            ],
            swiftSettings: strict),

        .executableTarget(
            name: "smlt",
            dependencies: [
                "RedisClient", "TensorBlob", "ShardManager", "TrainingProtocol", "ParamServer", "Workloads",
                "Scheduler", "LocalProcesses", "Checkpoints", "Coordinator", "BuiltinWorker", "FunctionClient",
                "KeySchema", "Planner", "Observability",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "smlt-bench",
            dependencies: [
                "RedisClient", "TensorBlob", "ShardManager", "TrainingProtocol", "ParamServer", "Scheduler",
                "LocalProcesses", "Workloads", "Planner", "PlannerSimulation", "Observability",
                // The codec benchmark times LZ4 and the kernels alone too.
                "CLZ4", "CTensorKernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "bench/smlt-bench",
            swiftSettings: strict),
        // The worker of README.md's "Writing a worker in Swift": softmax regression on the SDK alone.
        .executableTarget(
            name: "softmax-worker", dependencies: ["FunctionClient"], path: "Examples/softmax-worker",
            swiftSettings: strict),

        // Starts and stops real redis-server processes for the tests.
        .target(
            name: "TestSupport", dependencies: ["RedisClient", "LocalProcesses", "Workloads"], path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "TensorBlobTests", dependencies: ["TensorBlob", "CTensorKernels", "CLZ4"], swiftSettings: strict),
        .testTarget(
            name: "RedisClientTests", dependencies: ["RedisClient", "LocalProcesses", "TestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "ShardManagerTests",
            dependencies: ["ShardManager", "RedisClient", "LocalProcesses", "TensorBlob", "TestSupport", "KeySchema"],
            swiftSettings: strict),
        .testTarget(name: "WorkloadsTests", dependencies: ["Workloads"], swiftSettings: strict),
        .testTarget(name: "PlannerTests", dependencies: ["Planner", "PlannerSimulation"], swiftSettings: strict),
        .testTarget(
            name: "TrainingTests",
            dependencies: [
                "ParamServer", "FunctionClient", "TrainingProtocol", "ShardManager", "RedisClient", "LocalProcesses",
                "TensorBlob", "TestSupport", "Checkpoints", "KeySchema", "Coordinator", "Workloads",
                "Scheduler", "Planner", "Observability",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
    ]
)
