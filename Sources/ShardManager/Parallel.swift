import Foundation
import Synchronization

/// Runs blocking work (Redis round trips) on one thread per item and waits for all of them.
/// Threads, not the cooperative pool: a blocked Redis call must not starve other work.
enum Parallel {
    static func map<R: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> R) -> [R] {
        if count == 1 { return [body(0)] }
        let results = Mutex<[R?]>(Array(repeating: nil, count: count))
        let group = DispatchGroup()
        for i in 1..<count {
            group.enter()
            let t = Thread {
                let r = body(i)
                results.withLock { $0[i] = r }
                group.leave()
            }
            t.stackSize = 1 << 20
            t.start()
        }
        let first = body(0)
        results.withLock { $0[0] = first }
        group.wait()
        return results.withLock { $0.map { $0! } }
    }
}
