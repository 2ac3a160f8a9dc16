/// What running the rest of a job at one configuration is predicted to take.
public struct Prediction: Sendable, Codable, Equatable {
    public var configuration: Configuration
    /// Steps still to run.
    public var steps: Int
    /// Seconds from now to the end, including the pause of switching to this configuration.
    public var seconds: Double
    /// USD from now to the end: function GB-seconds, requests and shard-hours.
    public var costUSD: Double

    public init(configuration: Configuration, steps: Int, seconds: Double, costUSD: Double) {
        self.configuration = configuration
        self.steps = steps
        self.seconds = seconds
        self.costUSD = costUSD
    }

    enum CodingKeys: String, CodingKey {
        case configuration, steps, seconds
        case costUSD = "cost_usd"
    }
}

/// Prices that are not the platform's: what a shard (a Redis server with its parameter server)
/// costs per hour.
public struct ShardPrice: Sendable, Codable, Equatable {
    public var perHourUSD: Double
    public init(perHourUSD: Double) { self.perHourUSD = perHourUSD }
}
