import COpenSSL

/// SHA-256's implementation, looked up in OpenSSL's providers once: `EVP_DigestInit_ex` with
/// `EVP_sha256()` repeats the lookup (under a lock) for every message, which cost more than
/// hashing a small message.
private nonisolated(unsafe) let sha256Method: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)

/// Incremental SHA-256 over OpenSSL's EVP interface.
final class SHA256Hasher {
    private let context: OpaquePointer

    init?() {
        guard let method = sha256Method, let ctx = EVP_MD_CTX_new() else { return nil }
        guard EVP_DigestInit_ex(ctx, method, nil) == 1 else {
            EVP_MD_CTX_free(ctx)
            return nil
        }
        context = ctx
    }

    deinit { EVP_MD_CTX_free(context) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        _ = EVP_DigestUpdate(context, base, bytes.count)
    }

    /// The digest as lowercase hex. Call once.
    func finalizeHex() -> String {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { digest in
            var length: UInt32 = 0
            _ = EVP_DigestFinal_ex(context, digest.baseAddress, &length)
            return hex(UnsafeBufferPointer(rebasing: digest[..<Int(min(length, 32))]))
        }
    }

    static func digest(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBytes { input in
            out.withUnsafeMutableBufferPointer { o in
                _ = SHA256(input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count, o.baseAddress)
            }
        }
        return out
    }
}

func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let digits: StaticString = "0123456789abcdef"
    return String(unsafeUninitializedCapacity: bytes.count * 2) { out in
        var i = 0
        for b in bytes {
            out[i] = digits.utf8Start[Int(b >> 4)]
            out[i + 1] = digits.utf8Start[Int(b & 0x0F)]
            i += 2
        }
        return i
    }
}
