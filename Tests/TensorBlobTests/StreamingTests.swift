import Testing

@testable import TensorBlob

/// Blobs written as header + payload parts and read back in two phases, as the socket paths do.
@Suite struct StreamingTests {
    func values(_ n: Int) -> [Float] { (0..<n).map { Float(($0 * 37) % 101) * 0.25 - 3 } }

    func assemble(_ parts: BlobParts, _ v: [Float]) -> [UInt8] {
        v.withUnsafeBufferPointer { p in parts.segments(values: p).flatMap { Array($0) } }
    }

    @Test(arguments: BlobCodec.allCases)
    func partsAreTheSameBlobAsEncode(codec: BlobCodec) throws {
        let v = values(50_000)
        let parts = v.withUnsafeBufferPointer { TensorBlob.encodeParts($0, codec: codec, step: 9, producer: 3) }
        let blob = assemble(parts, v)
        #expect(blob == TensorBlob.encode(v, codec: codec, step: 9, producer: 3))
        #expect(parts.blobLength == blob.count)
        #expect(try TensorBlob.decode(blob).values == v)
    }

    /// Decodes `blob` in two phases; returns the values or throws.
    func twoPhase(_ blob: [UInt8], count: Int) throws(TensorBlobError) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        let scratch = DecodeScratch()
        let r = out.withUnsafeMutableBufferPointer { dst in
            blob.withUnsafeBytes { b in
                Result { () throws(TensorBlobError) in
                    let prefix = UnsafeRawBufferPointer(rebasing: b[0..<min(48, b.count)])
                    let (h, payload) = try TensorBlob.payloadTarget(
                        prefix: prefix, blobLength: b.count, destination: dst, scratch: scratch)
                    payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[48...]))
                    try TensorBlob.finishDecode(
                        h, prefix: prefix, payload: UnsafeRawBufferPointer(payload), into: dst, scratch: scratch)
                }
            }
        }
        try r.get()
        return out
    }

    @Test(arguments: BlobCodec.allCases)
    func twoPhaseDecodeRoundTripsAndRejectsDamage(codec: BlobCodec) throws {
        let v = values(20_000)
        let blob = TensorBlob.encode(v, codec: codec, step: 1, producer: 0)
        #expect(try twoPhase(blob, count: v.count) == v)

        var flipped = blob
        flipped[blob.count - 5] ^= 0x10
        #expect { try twoPhase(flipped, count: v.count) } throws: {
            ($0 as? TensorBlobError)?.code == .checksumMismatch
        }
        #expect { try twoPhase(blob, count: v.count + 1) } throws: {
            ($0 as? TensorBlobError)?.code == .countMismatch
        }
        #expect { try twoPhase(Array(blob.dropLast()), count: v.count) } throws: {
            ($0 as? TensorBlobError)?.code == .lengthMismatch
        }
        #expect { try twoPhase(Array(blob[0..<20]), count: v.count) } throws: {
            ($0 as? TensorBlobError)?.code == .truncated
        }
    }
}
