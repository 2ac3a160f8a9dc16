/// Which node serves each hash slot of a Redis Cluster, as `CLUSTER SLOTS` reports it: a master
/// and its replicas per range of slots.
public struct ClusterSlotMap: Sendable, Equatable {
    /// A range of slots and the nodes that hold it.
    public struct Range: Sendable, Equatable {
        public var slots: ClosedRange<UInt16>
        public var master: RedisEndpoint
        public var replicas: [RedisEndpoint]
    }

    /// The ranges, sorted by their first slot.
    public let ranges: [Range]
    /// Master of every slot (nil when no node serves it).
    private let masters: [Int?]
    private let nodes: [RedisEndpoint]

    public init(ranges: [Range]) {
        self.ranges = ranges.sorted { $0.slots.lowerBound < $1.slots.lowerBound }
        var nodes: [RedisEndpoint] = []
        var index: [RedisEndpoint: Int] = [:]
        var masters = [Int?](repeating: nil, count: HashSlot.count)
        for r in self.ranges {
            let i = index[r.master] ?? nodes.count
            if i == nodes.count {
                nodes.append(r.master)
                index[r.master] = i
            }
            for s in r.slots { masters[Int(s)] = i }
        }
        self.masters = masters
        self.nodes = nodes
    }

    /// The master serving `slot`, or nil when the cluster does not cover it.
    public func master(for slot: HashSlot) -> RedisEndpoint? { masters[Int(slot.value)].map { nodes[$0] } }

    /// The replicas of the range holding `slot` (empty when no range does).
    public func replicas(for slot: HashSlot) -> [RedisEndpoint] {
        ranges.first { $0.slots.contains(slot.value) }?.replicas ?? []
    }

    /// Every master, in the order of their first range.
    public var allMasters: [RedisEndpoint] { nodes }

    /// Every master and replica, masters first.
    public var allNodes: [RedisEndpoint] {
        var seen = Set(nodes)
        return nodes + ranges.flatMap(\.replicas).filter { seen.insert($0).inserted }
    }

    /// Whether every slot has a master.
    public var coversAllSlots: Bool { !masters.contains(nil) }

    /// Reads a `CLUSTER SLOTS` reply from `node`: `[[start, end, [host, port, id…], [replica…]…]…]`.
    /// An empty host means the node that answered.
    public static func parse(_ reply: RedisReply, from node: RedisEndpoint) throws(RedisError) -> ClusterSlotMap {
        func bad(_ why: String) -> RedisError {
            RedisError(.unexpectedReply, endpoint: node.description, "CLUSTER SLOTS: \(why)")
        }
        guard let entries = reply.array else { throw bad("not an array: \(reply)") }
        func endpoint(_ r: RedisReply) throws(RedisError) -> RedisEndpoint {
            guard let parts = r.array, parts.count >= 2, let host = parts[0].text, let port = parts[1].integer,
                (1...65535).contains(port)
            else { throw bad("a node entry is not [host, port, …]: \(r)") }
            if host.isEmpty || host == "?", case .tcp(let h, _) = node.address {
                return RedisEndpoint(host: h, port: Int(port))
            }
            return RedisEndpoint(host: host, port: Int(port))
        }
        var ranges: [Range] = []
        for e in entries {
            guard let parts = e.array, parts.count >= 3, let lo = parts[0].integer, let hi = parts[1].integer,
                lo >= 0, lo <= hi, hi < HashSlot.count
            else { throw bad("a range entry is not [start, end, master, …]: \(e)") }
            ranges.append(
                Range(
                    slots: UInt16(lo)...UInt16(hi), master: try endpoint(parts[2]),
                    replicas: try parts[3...].map { (r) throws(RedisError) in try endpoint(r) }))
        }
        ranges.sort { $0.slots.lowerBound < $1.slots.lowerBound }
        for (a, b) in zip(ranges, ranges.dropFirst()) where a.slots.upperBound >= b.slots.lowerBound {
            throw bad("ranges \(a.slots) and \(b.slots) overlap")
        }
        return ClusterSlotMap(ranges: ranges)
    }
}
