import CLZ4
import CTensorKernels
import Testing

@testable import TensorBlob

/// Damaged and hostile sparse-lz4 blobs: every one is refused with a typed error naming what is
/// wrong, and nothing is written outside the destination.
@Suite struct CorruptSparseBlobs {
    /// A sparse-lz4 blob with a valid checksum around whatever it is given: the pair count
    /// field, the u32 deltas and the f32 values (shuffled as the format says), LZ4-compressed.
    static func craft(
        count: UInt64, pairs: UInt32, deltas: [UInt32], values: [Float], extra: [UInt8] = [], lz4: Bool = true
    ) -> [UInt8] {
        var section = [UInt8](repeating: 0, count: deltas.count * 4 + values.count * 4)
        section.withUnsafeMutableBytes { s in
            deltas.map(\.littleEndian).withUnsafeBytes { ctk_shuffle($0.baseAddress, s.baseAddress, deltas.count, 4) }
            values.withUnsafeBytes { ctk_shuffle($0.baseAddress, s.baseAddress! + deltas.count * 4, values.count, 4) }
        }
        section += extra
        var payload = withUnsafeBytes(of: pairs.littleEndian) { Array($0) }
        if lz4 {
            var block = [UInt8](repeating: 0, count: Int(clz4_compress_bound(Int32(section.count))))
            let n = section.withUnsafeBytes { s in
                block.withUnsafeMutableBytes {
                    clz4_compress(s.baseAddress, $0.baseAddress, Int32(s.count), Int32($0.count))
                }
            }
            payload += block[0..<Int(n)]
        }
        return payload.withUnsafeBytes {
            var blob = TensorBlob.assemble(dtype: .f32, codec: .sparseLZ4, count: 1, step: 0, producer: 0, payload: $0)
            // The count is set afterwards so that any count can be tried; then re-checksummed.
            blob.withUnsafeMutableBytes { out in
                storeLE(count, out, 8)
                storeLE(TensorBlob.checksum(UnsafeRawBufferPointer(out)), out, 40)
            }
            return blob
        }
    }

    /// Decodes `blob` into a buffer with guard elements on both sides, and checks that they are
    /// untouched; returns the error.
    func refusal(_ blob: [UInt8], count: Int, maxElements: Int = TensorBlob.defaultMaxElements) -> TensorBlobError? {
        var buffer = [Float](repeating: 42, count: count + 2)
        var refused: TensorBlobError?
        buffer.withUnsafeMutableBufferPointer { b in
            blob.withUnsafeBytes { raw in
                do throws(TensorBlobError) {
                    try TensorBlob.decode(
                        raw, into: UnsafeMutableBufferPointer(rebasing: b[1...count]), maxElements: maxElements)
                } catch { refused = error }
            }
        }
        #expect(buffer.first == 42 && buffer.last == 42, "decoding wrote outside its destination")
        // The pair reader refuses it too.
        if refused != nil { #expect(throws: TensorBlobError.self) { try TensorBlob.decodeSparse(blob) } }
        return refused
    }

    @Test func aWellFormedCraftedBlobDecodes() throws {
        let blob = Self.craft(count: 20, pairs: 3, deltas: [0, 5, 14], values: [1, 2, 3])
        let out = try TensorBlob.decode(blob).values
        #expect(out[0] == 1 && out[5] == 2 && out[19] == 3 && out.filter { $0 != 0 }.count == 3)
    }

    @Test func indicesOutOfRangeAreRefused() {
        for deltas: [UInt32] in [[20], [5, 15], [19, 1], [0, UInt32.max]] {
            let e = refusal(
                Self.craft(count: 20, pairs: UInt32(deltas.count), deltas: deltas, values: deltas.map { _ in 1 }),
                count: 20)
            #expect(e?.code == .invalidIndex, "\(deltas)")
            #expect(e?.message.contains("out of range for 20 elements") == true, "\(String(describing: e))")
        }
    }

    @Test func unsortedIndicesAreRefused() {
        // 10 then 7: the delta −3 as u32.
        let e = refusal(
            Self.craft(count: 20, pairs: 2, deltas: [10, UInt32(bitPattern: -3)], values: [1, 1]), count: 20)
        #expect(e?.code == .invalidIndex)
        #expect(e?.message.contains("strictly increasing") == true, "\(String(describing: e))")
    }

    @Test func duplicatedIndicesAreRefused() {
        let e = refusal(Self.craft(count: 20, pairs: 3, deltas: [4, 3, 0], values: [1, 2, 3]), count: 20)
        #expect(
            e == TensorBlobError(.invalidIndex, "pair 2 repeats index 7 (delta 0; indices must be strictly increasing)")
        )
    }

    @Test func pairCountThatDisagreesWithThePayloadIsRefused() {
        // Declares 3 pairs, holds 2 (and the other way round): the LZ4 block is the wrong size.
        let short = Self.craft(count: 100, pairs: 3, deltas: [1, 2], values: [1, 2])
        #expect(refusal(short, count: 100)?.code == .corruptPayload)
        let long = Self.craft(count: 100, pairs: 2, deltas: [1, 2, 3], values: [1, 2, 3])
        #expect(refusal(long, count: 100)?.code == .corruptPayload)
        // Bytes after the pairs.
        let trailing = Self.craft(count: 100, pairs: 2, deltas: [1, 2], values: [1, 2], extra: [0, 0, 0])
        #expect(refusal(trailing, count: 100)?.code == .corruptPayload)
        // Pairs declared, no LZ4 block; no pairs, but a block.
        let noBlock = Self.craft(count: 100, pairs: 2, deltas: [], values: [], lz4: false)
        #expect(refusal(noBlock, count: 100)?.code == .lengthMismatch)
        let zeroWithBlock = Self.craft(count: 100, pairs: 0, deltas: [1], values: [1])
        #expect(refusal(zeroWithBlock, count: 100)?.code == .lengthMismatch)
    }

    @Test func absurdSizesAreRefusedBeforeAnythingIsAllocated() {
        // More pairs than elements, up to 2^32 − 1.
        for pairs: UInt32 in [101, 1 << 31, UInt32.max] {
            let e = refusal(Self.craft(count: 100, pairs: pairs, deltas: [1], values: [1]), count: 100)
            #expect(e == TensorBlobError(.lengthMismatch, "sparse blob declares \(pairs) pairs for 100 elements"))
        }
        // As many pairs as elements, but a block of a few bytes: refused before a buffer is sized.
        // (Read as pairs: a dense destination of 2^28 elements would be the allocation avoided.)
        let many = Self.craft(count: 1 << 28, pairs: 1 << 28, deltas: [1], values: [1])
        #expect {
            try TensorBlob.decodeSparse(many)
        } throws: { e in
            let e = e as! TensorBlobError
            return e.code == .lengthMismatch && e.message.contains("more than its")
        }
        // An element count above the limit, or above what 32-bit indices reach.
        let huge = Self.craft(count: 1 << 40, pairs: 1, deltas: [1], values: [1])
        #expect(refusal(huge, count: 4)?.code == .tooLarge)
        let past32 = Self.craft(count: (1 << 32) + 1, pairs: 1, deltas: [1], values: [1])
        #expect(refusal(past32, count: 4, maxElements: 1 << 40)?.code == .tooLarge)
        // A payload shorter than the pair count, or not smaller than the raw bytes.
        let tiny = Self.craft(count: 100, pairs: 0, deltas: [], values: [], lz4: false)
        var cut = Array(tiny.dropLast(2))
        cut.withUnsafeMutableBytes { out in
            storeLE(UInt64(2), out, 32)
            storeLE(TensorBlob.checksum(UnsafeRawBufferPointer(out)), out, 40)
        }
        #expect(refusal(cut, count: 100)?.code == .lengthMismatch)
        let notSmaller = Self.craft(count: 3, pairs: 1, deltas: [1], values: [1])
        #expect(refusal(notSmaller, count: 3)?.code == .lengthMismatch)
    }

    static let samples: [[UInt8]] = [
        TensorBlob.encode(sparse(5000), codec: .sparseLZ4, step: 3, producer: 1),
        TensorBlob.encode(sparse(5000), dtype: .bf16, codec: .sparseLZ4, step: 3, producer: 1),
        (try? TensorBlob.encodeTopK(gradientLike(3000, seed: 4), fraction: 0.05, dtype: .f16, step: 3, producer: 1))
            ?? [],
    ]

    @Test func samplesAreSparse() {
        for s in Self.samples { #expect(s.count > 48 && s[6] == BlobCodec.sparseLZ4.rawValue) }
    }

    @Test func everySingleBitFlipIsDetected() {
        var rng = RandomBits(state: 7)
        for blob in Self.samples {
            let positions = Array(0..<(blob.count * 8)).filter { _ in rng.next() % 3 == 0 }
            for bit in positions {
                var bad = blob
                bad[bit / 8] ^= UInt8(1 << (bit % 8))
                #expect(throws: TensorBlobError.self, "bit \(bit)") { try TensorBlob.decode(bad) }
            }
        }
    }

    @Test func truncationIsRefused() {
        for blob in Self.samples {
            for n in [0, 47, 48, 49, 51, 52, 53, blob.count - 1] {
                #expect(throws: TensorBlobError.self, "\(n) bytes") { try TensorBlob.decode(Array(blob.prefix(n))) }
            }
        }
    }

    /// Garbage behind a valid checksum, in the pair count and the LZ4 block: refused with a
    /// typed error or decoded (LZ4 may turn some into valid pairs), never a crash or a stray write.
    @Test func corruptPayloadWithValidChecksumNeverCrashes() {
        var rng = RandomBits(state: 13)
        for sample in Self.samples {
            let count = Int(sample.withUnsafeBytes { loadLE($0, 8) as UInt64 })
            for trial in 0..<300 {
                var blob = sample
                for _ in 0..<(1 + trial % 4) {
                    let i = BlobHeader.size + Int(rng.next() % UInt64(blob.count - BlobHeader.size))
                    blob[i] = UInt8(truncatingIfNeeded: rng.next())
                }
                blob.withUnsafeMutableBytes { storeLE(TensorBlob.checksum(UnsafeRawBufferPointer($0)), $0, 40) }
                if let e = refusal(blob, count: count) {
                    #expect([.corruptPayload, .invalidIndex, .lengthMismatch].contains(e.code), "\(e)")
                }
            }
        }
    }
}
