import Foundation
import LocalProcesses
import TrainingProtocol

/// Shows training progress on standard error: a bar on a terminal, plain lines otherwise.
final class ProgressReporter {
    let steps: Int
    let workers: Int
    let tty = isatty(2) != 0
    let start = ContinuousClock.now
    private var perStep: [Int: [StepMetrics]] = [:]
    private var completed = 0
    private var lastLine = ContinuousClock.now - .seconds(10)
    private var loss = 0.0
    private var accuracy = 0.0

    init(steps: Int, workers: Int) {
        self.steps = steps
        self.workers = workers
    }

    func add(_ metrics: [StepMetrics]) {
        for m in metrics { perStep[m.step, default: []].append(m) }
        while let ms = perStep[completed], ms.count >= workers {
            let n = Double(ms.reduce(0) { $0 + $1.examples })
            loss = ms.reduce(0) { $0 + $1.loss * Double($1.examples) } / max(n, 1)
            accuracy = ms.reduce(0) { $0 + $1.accuracy * Double($1.examples) } / max(n, 1)
            perStep[completed] = nil
            completed += 1
        }
        render(final: false)
    }

    func render(final: Bool) {
        let elapsed = (ContinuousClock.now - start).seconds
        let rate = Double(completed) / max(elapsed, 1e-9)
        let eta = rate > 0 ? Double(steps - completed) / rate : 0
        let stats = String(
            format: "step %d/%d  loss %.4f  acc %.3f  %.1f steps/s  ETA %.0fs", completed, steps, loss, accuracy, rate,
            eta)
        if tty {
            let width = 30
            let filled = steps == 0 ? width : width * completed / steps
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r[\(bar)] \(stats)\u{1B}[K".utf8))
        } else if final || ContinuousClock.now - lastLine >= .seconds(2) {
            lastLine = ContinuousClock.now
            FileHandle.standardError.write(Data("\(stats)\n".utf8))
        }
    }

    func finish() {
        render(final: true)
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
