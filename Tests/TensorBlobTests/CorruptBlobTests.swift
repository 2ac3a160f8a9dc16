import Testing

@testable import TensorBlob

@Suite struct CorruptBlobs {
    static let samples: [[UInt8]] = [
        TensorBlob.encode(sparse(5000), codec: .shuffleLZ4, step: 3, producer: 1),
        TensorBlob.encode(sparse(5000), codec: .bitshuffleLZ4, step: 3, producer: 1),
        TensorBlob.encode(sparse(5000), codec: .lz4, step: 3, producer: 1),
        TensorBlob.encode((0..<777).map { Float($0) * 0.37 }, codec: .raw, step: 3, producer: 1),
    ]

    @Test func everySingleBitFlipIsDetected() {
        var rng = RandomBits(state: 99)
        for blob in Self.samples {
            // Every bit of the header, and random bits of the payload.
            let positions =
                Array(0..<(BlobHeader.size * 8)) + (0..<400).map { _ in Int(rng.next() % UInt64(blob.count * 8)) }
            for bit in positions {
                var bad = blob
                bad[bit / 8] ^= UInt8(1 << (bit % 8))
                #expect(throws: TensorBlobError.self, "bit \(bit)") { try TensorBlob.decode(bad) }
            }
        }
    }

    @Test func randomMultiByteCorruptionNeverCrashes() {
        var rng = RandomBits(state: 5)
        for blob in Self.samples {
            for _ in 0..<300 {
                var bad = blob
                for _ in 0..<Int(1 + rng.next() % 8) {
                    bad[Int(rng.next() % UInt64(bad.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                if bad == blob { continue }
                #expect(throws: TensorBlobError.self) { try TensorBlob.decode(bad) }
            }
        }
    }

    @Test func truncationAtEveryHeaderOffsetAndInThePayload() {
        for blob in Self.samples {
            for n in Array(0..<BlobHeader.size) + [BlobHeader.size, BlobHeader.size + 1, blob.count - 1] {
                let cut = Array(blob.prefix(n))
                do {
                    _ = try TensorBlob.decode(cut)
                    Issue.record("decoding a blob truncated to \(n) bytes succeeded")
                } catch {
                    #expect(error.code == (n < BlobHeader.size ? .truncated : .lengthMismatch))
                }
            }
        }
    }

    @Test func wrongMagicVersionAndCodecAreNamed() {
        var blob = Self.samples[2]
        blob[0] = UInt8(ascii: "X")
        #expect(throws: TensorBlobError(.badMagic, "magic is not 'SMLT'")) { try TensorBlob.decode(blob) }
        blob = Self.samples[2]
        blob[4] = 9
        #expect { try TensorBlob.decode(blob) } throws: { ($0 as? TensorBlobError)?.code == .unsupportedVersion }
        blob = Self.samples[2]
        blob[6] = 200
        #expect { try TensorBlob.decode(blob) } throws: { ($0 as? TensorBlobError)?.code == .unknownCodec }
    }

    /// A blob that claims a huge element count is refused before anything is allocated.
    @Test func oversizedBlobIsRefused() {
        var blob = Self.samples[2]
        blob.withUnsafeMutableBytes { storeLE(UInt64(1) << 40, $0, 8) }
        #expect { try TensorBlob.decode(blob) } throws: { ($0 as? TensorBlobError)?.code == .tooLarge }
        #expect {
            try Self.samples[2].withUnsafeBytes { try TensorBlob.decode($0, maxElements: 100) }
        } throws: { ($0 as? TensorBlobError)?.code == .tooLarge }
    }

    /// Garbage LZ4 data behind a valid header and checksum: the decoder must fail cleanly.
    @Test func corruptLZ4WithValidChecksumIsRejected() {
        var rng = RandomBits(state: 11)
        for codec in [BlobCodec.lz4, .shuffleLZ4, .bitshuffleLZ4] {
            for trial in 0..<200 {
                var blob = TensorBlob.encode(sparse(5000), codec: codec, step: 0, producer: 0)
                for _ in 0..<(1 + trial % 5) {
                    let i = BlobHeader.size + Int(rng.next() % UInt64(blob.count - BlobHeader.size))
                    blob[i] = UInt8(truncatingIfNeeded: rng.next())
                }
                blob.withUnsafeMutableBytes { out in
                    storeLE(TensorBlob.checksum(UnsafeRawBufferPointer(out)), out, 40)
                }
                var dst = [Float](repeating: 0, count: 5000)
                do {
                    try blob.withUnsafeBytes { b in
                        try dst.withUnsafeMutableBufferPointer { _ = try TensorBlob.decode(b, into: $0) }
                    }
                    // LZ4 may decode some corruptions to the right length; that is allowed.
                } catch let e as TensorBlobError {
                    #expect(e.code == .corruptPayload)
                } catch { Issue.record("unexpected error \(error)") }
            }
        }
    }
}
