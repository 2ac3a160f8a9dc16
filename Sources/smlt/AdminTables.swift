import Foundation
import ShardManager

/// The `smlt admin shards` table.
func shardsTable(_ statuses: [ShardStatus]) -> String {
    var t = TextTable("SHARD", "REACHABLE", "CHUNKS", "BYTES", "USED MEMORY", "VERSIONS", "JOBS")
    for s in statuses {
        let versions = s.minVersion.map { min in "\(min)..\(s.maxVersion ?? min)" } ?? "-"
        t.add(
            s.endpoint, s.reachable ? "yes" : "NO", "\(s.chunks)", byteCount(s.bytes), byteCount(s.usedMemory),
            versions,
            s.jobs.isEmpty ? "-" : s.jobs.joined(separator: ","))
    }
    return t.render()
}

/// The nodes of a cluster, for `smlt admin shards` on one.
func clusterNodesTable(_ nodes: [ClusterNodeStatus]) -> String {
    var t = TextTable("NODE", "ROLE", "SLOTS", "REACHABLE", "LAG", "USED MEMORY", "LANES", "JOBS")
    for n in nodes {
        let slots = n.slots.map { $0[0] == $0[1] ? "\($0[0])" : "\($0[0])-\($0[1])" }.joined(separator: ",")
        let role =
            n.role + (n.master.map { " of \($0)" } ?? "")
            + (n.flags.isEmpty ? "" : " (\(n.flags.joined(separator: ",")))")
        let lag = n.replicationLagBytes.map { byteCount($0) } ?? (n.masterLinkUp == false ? "link down" : "-")
        t.add(
            n.endpoint, role, slots.isEmpty ? "-" : slots, n.reachable ? "yes" : "NO", lag, byteCount(n.usedMemory),
            n.lanes.isEmpty ? "-" : n.lanes.joined(separator: ","), n.jobs.isEmpty ? "-" : n.jobs.joined(separator: ",")
        )
    }
    return t.render()
}

/// The `smlt admin chunks` table.
func chunksTable(_ chunks: [ChunkStatus]) -> String {
    // The pull copy's column only for a job that keeps one.
    let pulls = chunks.contains { $0.pull != nil }
    var t = TextTable(
        ["CHUNK", "SHARD", "TENSORS", "ELEMENTS", "VERSION", "CODEC", "STORED", "RATIO"]
            + (pulls ? ["PULL COPY", "PULL STORED"] : []))
    for c in chunks {
        t.add(
            [
                "\(c.chunk)", c.shard, c.tensors.joined(separator: ","), "\(c.elements)",
                c.version.map(String.init) ?? "-", c.codec ?? (c.error ?? "-"), byteCount(c.storedBytes),
                c.ratio.map { String(format: "%.2fx", $0) } ?? "-",
            ]
                + (pulls ? [c.pull ?? "-", byteCount(c.pullStoredBytes)] : []))
    }
    return t.render()
}
