import CTensorKernels

extension DType {
    /// The LZ4 acceleration (`LZ4_compress_fast`) SMLT's writer uses for this dtype, chosen from
    /// the measurements in BENCHMARKS.md ("LZ4 acceleration"). f32 keeps LZ4's default.
    public var lz4Acceleration: Int32 {
        switch self {
        case .f32: 1
        case .f16, .bf16: 48
        }
    }

    /// The LZ4 acceleration SMLT's writer uses for blobs of this dtype under `codec`: 4 for
    /// bitshuffle-lz4 whatever the dtype (bit planes are runs or noise; from 4 on LZ4 skips the
    /// noise several times faster at the same ratio), else `lz4Acceleration`.
    public func lz4Acceleration(for codec: BlobCodec) -> Int32 {
        codec == .bitshuffleLZ4 ? 4 : lz4Acceleration
    }

    /// The f32 values a blob of this dtype holds for `values`: what a reader decodes after
    /// `TensorBlob.encode(values, dtype: self, …)`. A worker with error feedback keeps
    /// `values[i] - result[i]` and adds it to its next gradient. `result` may be `values`.
    public func round(_ values: UnsafeBufferPointer<Float>, into result: UnsafeMutableBufferPointer<Float>) {
        precondition(values.count == result.count, "round: \(values.count) values into \(result.count)")
        guard self != .f32 else {
            if values.baseAddress != UnsafePointer(result.baseAddress), let v = values.baseAddress {
                result.baseAddress!.update(from: v, count: values.count)
            }
            return
        }
        let elements = UnsafeMutableRawBufferPointer.allocate(byteCount: max(values.count * 2, 1), alignment: 64)
        defer { elements.deallocate() }
        narrow(values, into: elements.baseAddress!)
        widen(UnsafeRawPointer(elements.baseAddress!), into: result)
    }

    /// Error feedback's arithmetic for a push of this 2-byte dtype, in one pass: `v = gradient +
    /// residual` (`v = gradient` without one), `sent = v` rounded to this dtype (`round`), and
    /// `remainder = v − sent`, each one f32 operation per element. `remainder` may be `residual`.
    public func feedback(
        _ gradient: UnsafeBufferPointer<Float>, residual: UnsafeBufferPointer<Float>?,
        sent: UnsafeMutableBufferPointer<Float>, remainder: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(self != .f32, "feedback is for 2-byte dtypes")
        let n = gradient.count
        precondition(sent.count == n && remainder.count == n && (residual?.count ?? n) == n, "feedback: sizes differ")
        ctk_error_feedback(
            gradient.baseAddress, residual?.baseAddress, sent.baseAddress, remainder.baseAddress, n, Int32(rawValue))
    }

    /// Converts f32 values to this 2-byte dtype's little-endian elements at `dst`.
    func narrow(_ values: UnsafeBufferPointer<Float>, into dst: UnsafeMutableRawPointer) {
        let out = dst.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .bf16: ctk_f32_to_bf16(values.baseAddress, out, values.count)
        case .f16: ctk_f32_to_f16(values.baseAddress, out, values.count)
        case .f32: preconditionFailure("narrow is for 2-byte dtypes")
        }
    }

    /// Converts this 2-byte dtype's elements at `src` to f32.
    func widen(_ src: UnsafeRawPointer, into dst: UnsafeMutableBufferPointer<Float>) {
        let elements = src.assumingMemoryBound(to: UInt16.self)
        switch self {
        case .bf16: ctk_bf16_to_f32(elements, dst.baseAddress, dst.count)
        case .f16: ctk_f16_to_f32(elements, dst.baseAddress, dst.count)
        case .f32: preconditionFailure("widen is for 2-byte dtypes")
        }
    }
}

/// The bytes a blob of `dtype` stores for `values`, made on first use: the elements (the values
/// themselves for f32), and those elements byte-shuffled or bit-shuffled by the dtype's width.
final class ElementBytes {
    let values: UnsafeBufferPointer<Float>
    let dtype: DType
    private var converted: UnsafeMutableRawBufferPointer?
    private var shuffledBytes: UnsafeMutableRawBufferPointer?
    private var bitshuffledBytes: UnsafeMutableRawBufferPointer?

    init(_ values: UnsafeBufferPointer<Float>, _ dtype: DType) {
        self.values = values
        self.dtype = dtype
    }

    deinit {
        converted?.deallocate()
        shuffledBytes?.deallocate()
        bitshuffledBytes?.deallocate()
    }

    var byteCount: Int { values.count * dtype.byteWidth }

    /// The little-endian elements.
    var raw: UnsafeRawBufferPointer {
        if dtype == .f32 { return UnsafeRawBufferPointer(values) }
        if converted == nil {
            let c = UnsafeMutableRawBufferPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
            dtype.narrow(values, into: c.baseAddress!)
            converted = c
        }
        return UnsafeRawBufferPointer(rebasing: converted![0..<byteCount])
    }

    /// The elements byte-shuffled; for 2-byte dtypes converted and shuffled in one pass.
    var shuffled: UnsafeRawBufferPointer {
        made(&shuffledBytes) { dst in
            switch dtype {
            case .f32: ctk_shuffle(values.baseAddress, dst, values.count, 4)
            case .bf16: ctk_f32_to_bf16_shuffled(values.baseAddress, dst, values.count)
            case .f16: ctk_f32_to_f16_shuffled(values.baseAddress, dst, values.count)
            }
        }
    }

    /// The elements bit-shuffled (`ctk_bitshuffle`); for 2-byte dtypes converted and shuffled in
    /// one pass.
    var bitshuffled: UnsafeRawBufferPointer {
        made(&bitshuffledBytes) { dst in
            switch dtype {
            case .f32: ctk_bitshuffle(values.baseAddress, dst, values.count, 4)
            case .bf16: ctk_f32_to_bf16_bitshuffled(values.baseAddress, dst, values.count)
            case .f16: ctk_f32_to_f16_bitshuffled(values.baseAddress, dst, values.count)
            }
        }
    }

    /// `storage`'s bytes, made by `fill` into a new buffer of `byteCount` bytes on first use.
    private func made(
        _ storage: inout UnsafeMutableRawBufferPointer?, fill: (UnsafeMutableRawPointer) -> Void
    ) -> UnsafeRawBufferPointer {
        if storage == nil {
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
            fill(b.baseAddress!)
            storage = b
        }
        return UnsafeRawBufferPointer(rebasing: storage![0..<byteCount])
    }

    /// Hands the converted elements over to the caller (who deallocates them); nil for f32.
    func takeRaw() -> UnsafeMutableRawBufferPointer? {
        guard dtype != .f32 else { return nil }
        _ = raw
        defer { converted = nil }
        return UnsafeMutableRawBufferPointer(rebasing: converted![0..<byteCount])
    }
}
