import ShardManager
import Testing

@Suite struct PlacementTests {
    let shards = (1...4).map { "10.0.0.\($0):7000" }

    @Test func balancedAndDeterministic() {
        let a = Placement.assign(chunks: 20_000, job: "j", shards: shards)
        #expect(a == Placement.assign(chunks: 20_000, job: "j", shards: shards))
        for s in shards.indices {
            let share = Double(a.filter { $0 == s }.count) / 20_000
            #expect(share > 0.22 && share < 0.28, "shard \(s) got \(share)")
        }
    }

    @Test func addingAShardMovesAboutOneNth() {
        let before = Placement.assign(chunks: 20_000, job: "j", shards: shards)
        let grown = shards + ["10.0.0.5:7000"]
        let after = Placement.assign(chunks: 20_000, job: "j", shards: grown)
        let moved = zip(before, after).filter { $0 != $1 }
        let fraction = Double(moved.count) / 20_000
        #expect(fraction > 0.17 && fraction < 0.23, "moved \(fraction)")
        // Every moved chunk moved to the new shard, none between old shards.
        #expect(moved.allSatisfy { $0.1 == 4 })
    }

    @Test func removingAShardMovesOnlyItsChunks() {
        let before = Placement.assign(chunks: 20_000, job: "j", shards: shards)
        let shrunk = [shards[0], shards[1], shards[3]]
        let after = Placement.assign(chunks: 20_000, job: "j", shards: shrunk)
        for (b, a) in zip(before, after) where b != 2 {
            #expect(shrunk[a] == shards[b])
        }
    }

    @Test func shardOrderDoesNotMatter() {
        let a = Placement.assign(chunks: 1000, job: "j", shards: shards).map { shards[$0] }
        let reversed = Array(shards.reversed())
        let b = Placement.assign(chunks: 1000, job: "j", shards: reversed).map { reversed[$0] }
        #expect(a == b)
    }

    @Test func balancedPlacementEvensOutSmallJobs() {
        for chunks in [1, 7, 16, 33, 1000] {
            let a = Placement.balanced(chunks: chunks, job: "j", shards: shards)
            let loads = shards.indices.map { s in a.filter { $0 == s }.count }
            #expect(loads.max()! - loads.min()! <= 1, "\(chunks) chunks: \(loads)")
            #expect(a == Placement.balanced(chunks: chunks, job: "j", shards: shards))
        }
        // Most chunks stay where plain rendezvous hashing puts them.
        let plain = Placement.assign(chunks: 1000, job: "j", shards: shards)
        let bounded = Placement.balanced(chunks: 1000, job: "j", shards: shards)
        #expect(zip(plain, bounded).filter { $0 == $1 }.count > 800)
    }

    @Test func layoutChunksSpanTensors() {
        let layout = ModelLayout(
            tensors: [TensorSpec(name: "w", shape: [3, 5]), TensorSpec(name: "b", shape: [5])], chunkElements: 8)
        #expect(layout.totalElements == 20)
        #expect(layout.chunkCount == 3)
        #expect(layout.range(ofChunk: 2) == 16..<20)
        #expect(layout.tensorNames(inChunk: 1) == ["w", "b"])
        #expect(layout.chunks(covering: layout.range(ofTensor: "b")!) == 1..<3)
    }

    @Test func specValidationNamesTheProblem() {
        let bad = [
            JobSpec(job: "bad job", tensors: [TensorSpec(name: "w", shape: [1])]),
            JobSpec(job: "j", tensors: []),
            JobSpec(job: "j", tensors: [TensorSpec(name: "w", shape: [0])]),
            JobSpec(job: "j", tensors: [TensorSpec(name: "w", shape: [1]), TensorSpec(name: "w", shape: [2])]),
            JobSpec(job: "j", tensors: [TensorSpec(name: "w", shape: [1])], chunkElements: 0),
        ]
        for spec in bad {
            #expect(throws: ShardError.self) { try spec.validate() }
        }
    }
}
