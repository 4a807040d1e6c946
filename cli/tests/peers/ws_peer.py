"""An outside client of the Switchboard web face, with the `websockets` library.

ws_peer.py HOST:PORT CA_PEM USER PASSWORD TOTP_BASE32

Over wss (verifying the hub's certificate with CA_PEM): logs in with password + TOTP, runs
calls, a batch and a notification, follows the event feed (stored events, then a live one);
then over plain ws resumes the feed after the last order seen with the session cookie; then
POST /rpc with the cookie. Prints one line per check; exits non-zero on the first failure.
"""

import base64
import hashlib
import hmac
import json
import ssl
import struct
import sys
import time
import urllib.request

from websockets.sync.client import connect


def totp(secret_b32: str, at: float) -> int:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


class Rpc:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.notes = []

    def call(self, method, params=None):
        rid = self.next_id
        self.next_id += 1
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv(timeout=20))
            if isinstance(msg, dict) and msg.get("id") == rid:
                return msg
            self.notes.append(msg)

    def until(self, pred, timeout=20):
        end = time.time() + timeout
        while not any(pred(n) for n in self.notes):
            self.notes.append(json.loads(self.ws.recv(timeout=max(0.1, end - time.time()))))


def main():
    addr, ca, user, password, secret = sys.argv[1:6]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the hub's certificate names localhost; we dial an address
    with connect(f"wss://{addr}/rpc", ssl=ctx) as ws:
        rpc = Rpc(ws)
        r = rpc.call("ListAgentsRequest")
        check(r["error"]["data"]["code"] == "ACCESS", "a guest is refused by the hub")
        r = rpc.call("LoginRequest", {"username": user, "password": password, "totp": totp(secret, time.time())})
        check(r["result"]["result"] == "OK", "login over wss with password + TOTP")
        cookie = r["result"]["cookie"]
        r = rpc.call("CreateChannelRequest")
        chid = r["result"]["chid"]
        check(isinstance(chid, str) and chid.isdigit(), "uint64 results as strings (proto3 JSON)")
        r = rpc.call("SubscribeEventsRequest", {"fromOrder": 0})
        check("lastOrder" in r["result"], "subscribed from order 0")
        rpc.until(lambda n: n.get("method") == "EventNotice" and n["params"]["kind"] == "ChannelCreated")
        check(True, "the channel's creation came as an EventNotice")
        ws.send(json.dumps([
            {"jsonrpc": "2.0", "id": "a", "method": "ListChannelsRequest"},
            {"jsonrpc": "2.0", "method": "ListChannelsRequest"},
            {"jsonrpc": "2.0", "id": "b", "method": "NoSuchRequest"},
        ]))
        while True:
            m = json.loads(ws.recv(timeout=20))
            if isinstance(m, list):
                break
            rpc.notes.append(m)
        check(len(m) == 2 and {x["id"] for x in m} == {"a", "b"}, "a batch answers its calls, not its notification")
        check([x for x in m if x["id"] == "b"][0]["error"]["code"] == -32601, "method not found")
        r = rpc.call("DeleteChannelRequest", {"chid": chid})
        check("result" in r, "channel deleted")
        rpc.until(lambda n: n.get("method") == "EventNotice" and n["params"]["kind"] == "ChannelDeleted")
        orders = [int(n["params"]["order"]) for n in rpc.notes if n.get("method") == "EventNotice"]
        check(orders == sorted(set(orders)), "event orders strictly increase")
        last = orders[-1]
    # Resume on a new plain ws connection with the cookie: nothing before `last` again.
    with connect(f"ws://{addr}/rpc", additional_headers={"Cookie": f"switchboard_session={cookie}"}) as ws:
        rpc = Rpc(ws)
        r = rpc.call("CreateChannelRequest")
        check("result" in r, "the cookie header carries the session over plain ws")
        r = rpc.call("SubscribeEventsRequest", {"fromOrder": str(last)})
        rpc.until(lambda n: n.get("method") == "EventNotice" and n["params"]["kind"] == "ChannelCreated")
        resumed = [int(n["params"]["order"]) for n in rpc.notes if n.get("method") == "EventNotice"]
        check(resumed and resumed[0] == last + 1, f"resumed at {last + 1}: {resumed}")
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ListChannelsRequest"}).encode()
    req = urllib.request.Request(f"http://{addr}/rpc", data=body, method="POST", headers={
        "Content-Type": "application/json", "Cookie": f"switchboard_session={cookie}"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        r = json.loads(resp.read())
    check(len(r["result"]["channels"]) == 1, "POST /rpc with the cookie")
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
