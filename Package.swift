// swift-tools-version:6.0
// wdsync: an offline-first mail cache for WildDuck. No Swift package dependencies:
// the system's libsqlite3, libz and libssl/libcrypto are reached through module maps.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "wdsync",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "wdsync", targets: ["wdsync"]),
        .executable(name: "wdsync-sim", targets: ["wdsync-sim"]),
        .executable(name: "wdsync-bench", targets: ["wdsync-bench"]),
        .executable(name: "wdsync-torture", targets: ["wdsync-torture"]),
    ],
    targets: [
        // System libraries.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .target(name: "COpenSSL", path: "Sources/COpenSSL",
                linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),

        // Migrations/*.sql are compiled into the binary by this build-tool plugin.
        .executableTarget(name: "embed-migrations", path: "Sources/embed-migrations", swiftSettings: strict),
        .plugin(name: "EmbedMigrations", capability: .buildTool(),
                dependencies: ["embed-migrations"], path: "Sources/EmbedMigrations"),
        // The commit HEAD names is compiled into wdsync for --version (none without .git).
        .executableTarget(name: "embed-version", path: "Sources/embed-version", swiftSettings: strict),
        .plugin(name: "EmbedVersion", capability: .buildTool(),
                dependencies: ["embed-version"], path: "Sources/EmbedVersion"),

        // Library modules (docs/architecture.md says what each owns).
        .target(name: "Lock", swiftSettings: strict),
        .target(name: "Config", swiftSettings: strict),
        .target(name: "Net", dependencies: ["Lock", "COpenSSL"], swiftSettings: strict),
        .target(name: "WebSocket", dependencies: ["Lock", "Net", "CZlib", "COpenSSL"], swiftSettings: strict),
        .target(name: "Failures", swiftSettings: strict),
        .target(name: "WildDuck", dependencies: ["Lock", "Net", "WebSocket", "Failures"], swiftSettings: strict),
        .target(name: "Store", dependencies: ["CSQLite", "Maildir", "Failures"], swiftSettings: strict,
                plugins: ["EmbedMigrations"]),
        .target(name: "Maildir", dependencies: ["Lock", "COpenSSL", "Failures"], swiftSettings: strict),
        .target(name: "Sync", dependencies: ["Lock", "WildDuck", "Store", "Maildir", "Failures"],
                swiftSettings: strict),
        .executableTarget(name: "wdsync", dependencies: ["Lock", "Config", "Sync", "Failures"], swiftSettings: strict,
                          plugins: ["EmbedVersion"]),

        // The simulator: independent of the client's code paths (shares only WebSocket framing).
        .target(name: "WildDuckSim", dependencies: ["Lock", "WebSocket", "CZlib", "COpenSSL"], swiftSettings: strict),
        .executableTarget(name: "wdsync-sim", dependencies: ["WildDuckSim"], swiftSettings: strict),

        // Fuzzing entry points for every parser of outside bytes (contrib/fuzz.sh builds
        // `wdsync-fuzz` with -sanitize=fuzzer; a normal build replays files through them).
        .target(name: "Fuzz", dependencies: ["Net", "WebSocket", "WildDuck", "Maildir", "Config"], swiftSettings: strict),
        .executableTarget(name: "wdsync-fuzz", dependencies: ["Fuzz"], swiftSettings: strict),

        // The benchmark suite (contrib/bench/README.md): not a test, never fails because a machine is slow.
        .executableTarget(name: "wdsync-bench", dependencies: ["Lock", "WildDuckSim", "Maildir"], swiftSettings: strict),

        // The randomized sync torture test (docs/two-way.md, "How it is tested"; contrib/torture.sh).
        .executableTarget(name: "wdsync-torture", dependencies: ["WildDuckSim"], swiftSettings: strict),

        .testTarget(name: "NetTests", dependencies: ["Lock", "Net"], swiftSettings: strict),
        .testTarget(name: "WebSocketTests", dependencies: ["Lock", "WebSocket"], exclude: ["Fixtures"], swiftSettings: strict),
        .testTarget(name: "FailuresTests", dependencies: ["Failures"], swiftSettings: strict),
        .testTarget(name: "WildDuckTests", dependencies: ["WildDuck", "WildDuckSim", "Failures"], swiftSettings: strict),
        .testTarget(name: "StoreTests", dependencies: ["Store", "Maildir"], swiftSettings: strict),
        .testTarget(name: "MaildirTests", dependencies: ["Maildir"], swiftSettings: strict),
        .testTarget(name: "WildDuckSimTests", dependencies: ["Lock", "WildDuckSim", "WebSocket"], swiftSettings: strict),
        .testTarget(name: "FuzzTests", dependencies: ["Fuzz"], swiftSettings: strict),
        .testTarget(name: "ConfigTests", dependencies: ["Config"], swiftSettings: strict),
        .testTarget(name: "SyncTests", dependencies: ["Sync"], swiftSettings: strict),
        .testTarget(name: "EndToEndTests", dependencies: ["WildDuckSim", "Store"], swiftSettings: strict),
    ]
)
