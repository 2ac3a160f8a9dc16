import CTensorKernels

func ctkShuffle(_ src: [UInt8], _ dst: inout [UInt8], _ n: Int, _ w: Int) {
    src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in ctk_shuffle(s.baseAddress, d.baseAddress, n, w) } }
}

func ctkUnshuffle(_ src: [UInt8], _ dst: inout [UInt8], _ n: Int, _ w: Int) {
    src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in ctk_unshuffle(s.baseAddress, d.baseAddress, n, w) } }
}

func ctkCRC(_ b: UnsafeRawBufferPointer) -> UInt32 { ctk_crc32c(0, b.baseAddress, b.count) }
