/// A goal the planner cannot meet, or cannot plan for; the message gives the numbers and names
/// the flag.
public struct PlanError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
