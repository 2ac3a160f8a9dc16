import CTensorKernels

func ctkShuffle(_ src: [UInt8], _ dst: inout [UInt8], _ n: Int, _ w: Int) {
    src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in ctk_shuffle(s.baseAddress, d.baseAddress, n, w) } }
}

func ctkUnshuffle(_ src: [UInt8], _ dst: inout [UInt8], _ n: Int, _ w: Int) {
    src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in ctk_unshuffle(s.baseAddress, d.baseAddress, n, w) } }
}

func ctkCRC(_ b: UnsafeRawBufferPointer) -> UInt32 { ctk_crc32c(0, b.baseAddress, b.count) }

/// A `ctk_*_with` kernel that rearranges `count` elements of `width` bytes on one implementation
/// (`ctk_shuffle_with`, `ctk_bitshuffle_with` and their inverses); 0 when `impl` cannot run here.
typealias RearrangeKernel = (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int, Int, Int32) -> Int32

/// `forward` applied to `src` and `inverse` to its output, both on implementation `impl`, into
/// buffers filled with other bytes first (so an unwritten byte shows); nil when `impl` cannot run
/// on this CPU.
func roundTrip(
    _ src: [UInt8], count: Int, width: Int, impl: Int32, _ forward: RearrangeKernel, _ inverse: RearrangeKernel
) -> (forward: [UInt8], back: [UInt8])? {
    var out = [UInt8](repeating: 0xAA, count: src.count)
    var back = [UInt8](repeating: 0x55, count: src.count)
    let ok = src.withUnsafeBytes { s in
        out.withUnsafeMutableBytes { forward(s.baseAddress, $0.baseAddress, count, width, impl) }
    }
    guard ok == 1 else { return nil }
    _ = out.withUnsafeBytes { s in
        back.withUnsafeMutableBytes { inverse(s.baseAddress, $0.baseAddress, count, width, impl) }
    }
    return (out, back)
}
