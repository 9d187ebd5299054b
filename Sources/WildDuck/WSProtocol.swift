/// The WebSocket protocol of WildDuck's `/ws` (spec §7): JSON envelopes
/// `{type, channel, data}` from the client and `{type, channel, data:{code, response}}` from
/// the server. Payload shapes are not settled (spec §7.5–7.6), so decoding accepts every known
/// variant and turns anything it cannot apply exactly into a "dirty" event for REST.
public enum WSChannel: String, Sendable, CaseIterable {
    case mailboxes, messages, settings, filters, autoreply
}

public enum WSProtocol {
    /// `subscribe` for a channel; `messages` needs the mailbox.
    public static func subscribe(_ channel: WSChannel, userId: String, token: String, mailboxId: String? = nil) -> String {
        var data: [(String, JSON)] = [("userId", .string(userId)), ("token", .string(token))]
        if let mailboxId { data.append(("mailboxId", .string(mailboxId))) }
        return JSON.object([("type", .string("subscribe")), ("channel", .string(channel.rawValue)), ("data", .object(data))]).text
    }

    /// The secret-free form of an outgoing message, for the debug log.
    public static func redacted(_ text: String) -> String {
        guard var json = try? JSON.parse(text), case .object(var members) = json else { return "<unparseable>" }
        for (i, member) in members.enumerated() where member.0 == "data" {
            if case .object(var data) = member.1 {
                for (j, field) in data.enumerated() where field.0 == "token" { data[j].1 = .string("<redacted>") }
                members[i].1 = .object(data)
            }
        }
        json = .object(members)
        return json.text
    }

    public enum ServerMessage: Sendable, Equatable {
        /// A reply to subscribe/fetch (or unsolicited data). `mailboxId` when the payload names one.
        case data(channel: String, mailboxId: String?, code: Int, error: String?)
        /// Changes to apply (already mapped to remote events).
        case update(channel: String, events: [RemoteEvent])
        /// The server is closing the session: `server_shutdown`, `timeout`, `token_expired`, …
        case disconnect(reason: String)
        /// Not a message we understand; the caller logs it and refetches.
        case invalid(String)
    }

    public static func decode(_ text: String) -> ServerMessage {
        guard let json = try? JSON.parse(text) else { return .invalid("not JSON") }
        guard let type = json["type"]?.string else { return .invalid("no type") }
        let channel = json["channel"]?.string ?? ""
        let data = json["data"]
        let response = data?["response"]
        switch type {
        case "disconnect":
            // Both shapes: data.response.reason (client) and data.reason (plan/types).
            let reason = response?["reason"]?.string ?? data?["reason"]?.string ?? "unknown"
            return .disconnect(reason: reason)
        case "data":
            guard let data else { return .invalid("data without data") }
            let success = response?["success"]?.bool ?? (data["success"]?.bool ?? true)
            var code = data["code"]?.int ?? (success ? 200 : 500)
            if !success && code < 400 { code = 400 }
            let error = code >= 400 ? (response?["message"]?.string ?? response?["error"]?.string ?? "error \(code)") : nil
            let mailboxId = response?["mailboxId"]?.string ?? data["mailboxId"]?.string
            return .data(channel: channel, mailboxId: mailboxId, code: code, error: error)
        case "update":
            guard let payload = response ?? data else { return .invalid("update without data") }
            return .update(channel: channel, events: events(channel: channel, payload))
        default:
            return .invalid("unknown type \(type.prefix(40))")
        }
    }

    /// Maps an update payload to events. Both the per-event shape (`event` + object) and the
    /// batched `updates:[{type,…}]` shape are understood; anything else marks the channel dirty.
    static func events(channel: String, _ payload: JSON) -> [RemoteEvent] {
        let channelDirty: [RemoteEvent] = {
            switch channel {
            case "mailboxes": return [.mailboxesChanged]
            case "settings": return [.settingsChanged]
            case "filters": return [.filtersChanged]
            case "autoreply": return [.autoreplyChanged]
            case "messages":
                if let m = ServerID.objectId(payload["mailboxId"]) ?? ServerID.objectId(payload["mailbox"]) { return [.mailboxDirty(m)] }
                return [.resync]
            default: return [.resync]
            }
        }()
        if let updates = payload["updates"]?.array {
            var out: [RemoteEvent] = []
            for update in updates { out += batched(update, channel: channel, fallback: channelDirty) }
            return out.isEmpty ? channelDirty : out
        }
        guard let event = payload["event"]?.string else { return channelDirty }
        switch channel {
        case "mailboxes":
            // A mailbox "updated" may be a rename or new contents: re-list it as well.
            if event == "updated", let id = ServerID.objectId(payload["mailbox"]?["id"]) { return [.mailboxesChanged, .mailboxDirty(id)] }
            return [.mailboxesChanged]
        case "messages":
            guard let message = payload["message"],
                  let uid = ServerID.uid(message["id"]) ?? ServerID.uid(message["uid"]) ?? ServerID.uid(message),
                  let mailbox = ServerID.objectId(message["mailbox"]) ?? ServerID.objectId(payload["mailboxId"])
                    ?? ServerID.objectId(payload["mailbox"])
            else { return channelDirty }
            switch event {
            case "created": return [.messageAdded(mailbox: mailbox, uid: uid)]
            case "deleted": return [.messageRemoved(mailbox: mailbox, uid: uid)]
            default: return [.messageChanged(mailbox: mailbox, uid: uid)]
            }
        default:
            return channelDirty
        }
    }

    private static func batched(_ update: JSON, channel: String, fallback: [RemoteEvent]) -> [RemoteEvent] {
        guard let type = update["type"]?.string else { return fallback }
        // Invalid ids (see `ServerID`) count as absent.
        let mailbox = ServerID.objectId(update["mailbox"])
        let uid = ServerID.uid(update["uid"]) ?? ServerID.uid(update["message"])
        switch (type, mailbox, uid) {
        case ("message.added", let m?, let u?): return [.messageAdded(mailbox: m, uid: u)]
        case ("message.deleted", let m?, let u?): return [.messageRemoved(mailbox: m, uid: u)]
        case ("message.flags.changed", let m?, let u?):
            if let flags = update["flags"]?.array?.compactMap(\.string) {
                return [.messageFlags(mailbox: m, uid: u, flags: flags)]
            }
            return [.messageChanged(mailbox: m, uid: u)]
        case ("message.moved", let m?, _):
            // Which side and which new uid is not settled: re-list both mailboxes.
            var out: [RemoteEvent] = [.mailboxDirty(m)]
            if let target = ServerID.objectId(update["target"]) ?? ServerID.objectId(update["destination"]) { out.append(.mailboxDirty(target)) }
            return out
        case ("mailbox.updated", let m?, _): return [.mailboxesChanged, .mailboxDirty(m)]
        case (let t, _, _) where t.hasPrefix("mailbox."): return [.mailboxesChanged]
        case (let t, _, _) where t.hasPrefix("filter."): return [.filtersChanged]
        case (let t, _, _) where t.hasPrefix("autoreply."): return [.autoreplyChanged]
        case (let t, _, _) where t.hasPrefix("settings."): return [.settingsChanged]
        case (_, let m?, _): return [.mailboxDirty(m)]
        default: return fallback
        }
    }
}
