// Results: one aligned table on stdout and the same figures as JSON.
import Foundation

struct Row: Codable {
    var benchmark: String
    var subject: String
    var status: String = "ok"
    var messages: Int?
    var bytes: Int?
    var wallSeconds: Double?
    var msgPerSecond: Double?
    var mbPerSecond: Double?
    var cpuSeconds: Double?
    var userSeconds: Double?
    var sysSeconds: Double?
    var peakRssMiB: Double?
    var requests: Int?
    var bytesSent: Int?
    var requestsByRoute: [String: Int]?
    var filesTouched: Int?
    var p50Ms: Double?
    var p95Ms: Double?
    var p99Ms: Double?
    var idleCpuPercent: Double?
    var note: String?

    init(_ benchmark: String, _ subject: String) {
        self.benchmark = benchmark
        self.subject = subject
    }

    mutating func fill(_ r: RunResult, messages: Int?, bytes: Int?) {
        wallSeconds = r.wall
        cpuSeconds = r.cpu
        userSeconds = r.user
        sysSeconds = r.sys
        peakRssMiB = r.maxrssMiB
        self.messages = messages
        self.bytes = bytes
        if let m = messages, r.wall > 0 { msgPerSecond = Double(m) / r.wall }
        if let b = bytes, r.wall > 0 { mbPerSecond = Double(b) / 1e6 / r.wall }
        if !r.ok { status = "failed (\(r.statusText))" }
    }
}

struct Target: Codable {
    var name: String
    var goal: String
    var measured: String
    var met: Bool?
}

struct Report: Codable {
    var version = 1
    var date: String
    var machine: [String: String]
    var settings: [String: String]
    var notes: [String]
    var results: [Row]
    var ratios: [String: Double]
    var targets: [Target]
}

private func f(_ v: Double?, _ digits: Int) -> String {
    guard let v else { return "-" }
    return String(format: "%.\(digits)f", v)
}

func renderTable(_ rows: [Row]) -> String {
    let header = ["benchmark", "subject", "msgs", "wall s", "msg/s", "MB/s", "CPU s", "user s", "CPU s/1k", "RSS MiB", "requests", "touched", "result"]
    var lines: [[String]] = [header]
    for r in rows {
        var result = r.status
        if let p50 = r.p50Ms { result = "p50 \(f(p50, 2)) p95 \(f(r.p95Ms, 2)) p99 \(f(r.p99Ms, 2)) ms" }
        if let idle = r.idleCpuPercent { result = "\(f(idle, 3)) % of one core" }
        if let n = r.note { result += "; " + n }
        lines.append([r.benchmark, r.subject, r.messages.map(String.init) ?? "-",
                      f(r.wallSeconds, 3), f(r.msgPerSecond, 0), f(r.mbPerSecond, 1),
                      f(r.cpuSeconds, 2), f(r.userSeconds, 2),
                      f(r.msgPerSecond == nil ? nil : r.cpuSeconds.flatMap { c in r.messages.map { c / Double($0) * 1000 } }, 3),
                      f(r.peakRssMiB, 1),
                      r.requests.map(String.init) ?? "-", r.filesTouched.map(String.init) ?? "-", result])
    }
    var widths = [Int](repeating: 0, count: header.count)
    for l in lines { for (i, c) in l.enumerated() { widths[i] = max(widths[i], c.count) } }
    let numeric: Set<Int> = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    func fmt(_ l: [String]) -> String {
        l.enumerated().map { i, c in
            let pad = String(repeating: " ", count: widths[i] - c.count)
            return i == l.count - 1 ? c : (numeric.contains(i) ? pad + c : c + pad)
        }.joined(separator: "  ")
    }
    var out = [fmt(lines[0])]
    out.append(widths.enumerated().map { i, w in String(repeating: "-", count: i == widths.count - 1 ? 6 : w) }.joined(separator: "  "))
    out += lines.dropFirst().map(fmt)
    return out.joined(separator: "\n")
}
