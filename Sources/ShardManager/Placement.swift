/// Rendezvous (highest-random-weight) hashing of chunks onto shards.
///
/// Each (chunk, shard) pair gets a pseudo-random weight; a chunk lives on the shard with the
/// highest weight. Adding a shard moves only the chunks the new shard wins (about 1/n);
/// removing one moves only the chunks it held.
public enum Placement {
    /// The index in `shards` of the shard that owns `chunk` of `job`.
    public static func shard(forChunk chunk: Int, job: String, shards: [String]) -> Int {
        precondition(!shards.isEmpty, "placement needs at least one shard")
        var best = 0
        var bestWeight: UInt64 = 0
        for (i, shard) in shards.enumerated() {
            let w = weight(job: job, chunk: chunk, shard: shard)
            if i == 0 || w > bestWeight || (w == bestWeight && shard < shards[best]) {
                best = i
                bestWeight = w
            }
        }
        return best
    }

    /// The owning shard index of every chunk.
    public static func assign(chunks: Int, job: String, shards: [String]) -> [Int] {
        (0..<chunks).map { shard(forChunk: $0, job: job, shards: shards) }
    }

    /// Rendezvous placement with bounded load: each chunk, in order, goes to the shard with the
    /// highest weight that still has room for its equal share. Shards get equal shares
    /// to within one chunk (plain rendezvous leaves ±30% on a few dozen chunks, and the most
    /// loaded shard sets the pace of every step), while most chunks still sit where plain
    /// rendezvous puts them. New jobs are placed this way; the map stores the result.
    public static func balanced(chunks: Int, job: String, shards: [String]) -> [Int] {
        precondition(!shards.isEmpty, "placement needs at least one shard")
        // Every shard gets `share` chunks, and `extra` of them one more.
        let share = chunks / shards.count
        let extra = chunks % shards.count
        var load = [Int](repeating: 0, count: shards.count)
        var bigger = 0
        return (0..<chunks).map { chunk in
            var best = -1
            var bestWeight: UInt64 = 0
            for (i, shard) in shards.enumerated() where load[i] < share || (load[i] == share && bigger < extra) {
                let w = weight(job: job, chunk: chunk, shard: shard)
                if best < 0 || w > bestWeight || (w == bestWeight && shard < shards[best]) {
                    best = i
                    bestWeight = w
                }
            }
            load[best] += 1
            if load[best] == share + 1 { bigger += 1 }
            return best
        }
    }

    /// The rendezvous weight of (`chunk`, `shard`) for `job` (docs/wire-format.md).
    public static func weight(job: String, chunk: Int, shard: String) -> UInt64 {
        var h = Hash64.fnv1a(job.utf8)
        h = Hash64.fnv1a(shard.utf8, seed: h ^ 0x9E37_79B9_7F4A_7C15)
        return Hash64.mix(h ^ UInt64(truncatingIfNeeded: chunk) &* 0xD6E8_FEB8_6659_FD93)
    }
}

/// Small, fast, stable 64-bit hashes (not cryptographic).
public enum Hash64 {
    public static func fnv1a<S: Sequence>(_ bytes: S, seed: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64
    where S.Element == UInt8 {
        var h = seed
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }

    /// The splitmix64 finalizer: spreads every input bit over the output.
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
