import CTensorKernels

extension DType {
    /// The LZ4 acceleration (`LZ4_compress_fast`) SMLT's writer uses for this dtype, chosen from
    /// the measurements in BENCHMARKS.md ("LZ4 acceleration"). f32 keeps LZ4's default.
    public var lz4Acceleration: Int32 {
        switch self {
        case .f32: 1
        case .f16, .bf16: 32
        }
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
