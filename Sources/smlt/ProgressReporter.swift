import Coordinator
import Foundation
import LocalProcesses
import TrainingProtocol

/// Shows training progress on standard error: a bar on a terminal, plain lines otherwise.
/// Used from the driver's thread only (the Coordinator calls its events from its run loop).
final class ProgressReporter {
    let quiet: Bool
    let tty = isatty(2) != 0
    let start = ContinuousClock.now
    private var steps = 0
    private var workersAt: (Int) -> Int = { _ in 1 }
    private var perStep: [Int: [StepMetrics]] = [:]
    private var completed = 0
    private var lastLine = ContinuousClock.now - .seconds(10)
    private var loss = 0.0
    private var accuracy = 0.0
    private var finished = false

    init(quiet: Bool) { self.quiet = quiet }

    /// Takes the number of steps and the workers of each step from the run's plan.
    func start(_ plan: TrainingPlan) {
        steps = plan.steps
        workersAt = { plan.workers(at: $0) }
    }

    func add(_ metrics: [StepMetrics]) {
        for m in metrics where m.step >= completed { perStep[m.step, default: []].append(m) }
        while let ms = perStep[completed], Set(ms.map(\.worker)).count >= workersAt(completed) {
            let n = Double(ms.reduce(0) { $0 + $1.examples })
            loss = ms.reduce(0) { $0 + $1.loss * Double($1.examples) } / max(n, 1)
            accuracy = ms.reduce(0) { $0 + $1.accuracy * Double($1.examples) } / max(n, 1)
            perStep[completed] = nil
            completed += 1
        }
        render(final: false)
    }

    func render(final: Bool) {
        guard !quiet else { return }
        let line: String? = {
            let elapsed = (ContinuousClock.now - start).seconds
            let rate = Double(completed) / max(elapsed, 1e-9)
            let eta = rate > 0 ? Double(steps - completed) / rate : 0
            let stats = String(
                format: "step %d/%d  loss %.4f  acc %.3f  %.1f steps/s  ETA %.0fs", completed, steps, loss, accuracy,
                rate, eta)
            if tty {
                let width = 30
                let filled = steps == 0 ? width : width * min(completed, steps) / steps
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                return "\r[\(bar)] \(stats)\u{1B}[K"
            } else if final || ContinuousClock.now - lastLine >= .seconds(2) {
                lastLine = ContinuousClock.now
                return "\(stats)\n"
            }
            return nil
        }()
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    func finish() {
        guard !finished, steps > 0 else { return }
        finished = true
        render(final: true)
        if tty && !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
