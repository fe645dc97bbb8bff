#!/usr/bin/env python3
"""Runs KV operations against a real NATS JetStream KV, for tests/nats_differential.rs and
tests/nats_replication.rs.

Usage: driver.py NATS_URL. Reads one operation per line from stdin, as JSON, and answers each
with one line of JSON on stdout, in order, before reading the next (the test resolves revisions
that later operations name from the answers). Standard library and nats-py only.

Operations (every one names its `bucket`):
  {"op": "bucket", "history": H,              create the bucket (file storage); with
   "republish"?: {"src", "dest",              `republish`, its stream republishes matching
                  "headers_only"?}}           messages (`src` is a key pattern: the driver
                                              prefixes $KV.<bucket>.), and every message
                                              published on `dest` (a subscribable subject) is
                                              recorded from before the first write on
  {"op": "mirror", "origin", "history": H}    add stream KV_<bucket> mirroring KV_<origin>,
                                              with the settings of a KV's stream (see
                                              Driver.mirror)
  {"op": "put", "key", "value"}               kv.put
  {"op": "create", "key", "value"}            kv.create
  {"op": "update", "key", "value", "last"}    kv.update(last=...)
  {"op": "delete", "key", "last"?}            kv.delete(last=...)
  {"op": "purge", "key"}                      kv.purge
  {"op": "get", "key", "revision"?}           kv.get(revision=...)
  {"op": "history", "key"}                    kv.history
  {"op": "keys", "filter"?}                   kv.keys, and a watcher of the filter's latest
                                              entries (see Driver.keys)
  {"op": "republished"}                       the messages recorded for the bucket's
                                              republish so far, in arrival order
  {"op": "stream"}                            every message KV_<bucket> holds (a mirror
                                              too), by sequence, its last sequence, and for
                                              a mirror its lag as stream info reports it

Answers: {"ok": true, ...} or {"error": CLASS, ...}. Classes: "not_found" (KeyNotFoundError,
NoKeysError of history), "wrong_last_sequence" (KeyWrongLastSequenceError, or the JetStream
API error 10071 that delete(last=) raises unconverted), "other" (anything else, with its type
and text, so the test shows it). Values are bytes in NATS; they are answered as UTF-8 text (the
test writes text only), markers' values as null. A stream message's or a republished
message's key is its subject without `$KV.<bucket>.` (a mirror keeps its origin's subjects),
its operation the KV-Operation header (PUT when absent).
"""

import asyncio
import json
import re
import sys

import nats
import nats.js.api as api
import nats.js.errors as errors

# Every NATS call is bounded: a stuck server fails the test instead of hanging it.
TIMEOUT = 10.0
WRONG_LAST_SEQUENCE = 10071
CURRENT_IN_DESCRIPTION = re.compile(r"wrong last sequence: (\d+)")


def text(value):
    # nats-py gives None, not b"", for an empty payload read with get(): the value is "".
    return "" if value is None else value.decode("utf-8")


def entry_json(entry):
    # nats-py leaves `operation` None for a value (a message without KV-Operation).
    operation = entry.operation or "PUT"
    return {
        "key": entry.key,
        # A delete or purge marker has an empty payload and no value: answered as null.
        "value": text(entry.value) if operation == "PUT" else None,
        "revision": entry.revision,
        "operation": operation,
    }


def wrong_last(description):
    match = CURRENT_IN_DESCRIPTION.search(description or "")
    return {
        "error": "wrong_last_sequence",
        "current": int(match.group(1)) if match else None,
        "description": description,
    }


async def entries_of(watcher):
    """What a watcher delivers until its end-of-initial-values marker (None)."""
    found = []
    while True:
        entry = await watcher.updates(timeout=TIMEOUT)
        if entry is None:
            break
        found.append(entry_json(entry))
    await watcher.stop()
    return found


# nats-py's watcher (under keys() and history() too) can report "no more entries" before any:
# it compares consumer info's num_pending with the messages its callback has counted, and when
# the server has pushed every message before that reply, none is counted yet (the callbacks wait
# for the reply), so the end marker comes first and the answer is empty. Only an empty answer
# can be wrong that way, so an empty answer is asked again, a bounded number of times; a truly
# empty one stays empty.
EMPTY_RETRIES = 4


async def unless_empty(fetch):
    found = await fetch()
    for attempt in range(1, EMPTY_RETRIES + 1):
        if found:
            break
        await asyncio.sleep(0.02)
        found = await fetch()
        if found:
            print(f"driver: an empty watcher answer was not empty when asked again ({attempt})", file=sys.stderr)
    return found


async def history_of(kv, key):
    try:
        return [entry_json(entry) for entry in await kv.history(key)]
    except errors.NoKeysError:
        return []


async def keys_of(kv):
    try:
        return await kv.keys()
    except errors.NoKeysError:
        # nats-py raises NoKeysError for a bucket without live keys instead of returning [].
        return []


def message_json(subject, headers, data):
    """A stream's or a republished message: its key (the subject after `$KV.<bucket>.`),
    operation (KV-Operation, PUT when absent) and value (null for a marker)."""
    headers = headers or {}
    operation = headers.get("KV-Operation", "PUT")
    return {
        "key": subject.split(".", 2)[2],
        "operation": operation,
        "value": text(data) if operation == "PUT" else None,
    }


class Driver:
    def __init__(self, nc, js):
        self.nc = nc
        self.js = js
        self.buckets = {}
        # The messages republished for each bucket, in arrival order.
        self.republished = {}

    async def kv(self, name):
        if name not in self.buckets:
            self.buckets[name] = await self.js.key_value(name)
        return self.buckets[name]

    async def run(self, op):
        name = op["bucket"]
        kind = op["op"]
        if kind == "bucket":
            republish = op.get("republish")
            if republish is not None:
                await self.listen(name, republish["dest"])
                republish = api.RePublish(
                    src=f"$KV.{name}.{republish['src']}",
                    dest=republish["dest"],
                    headers_only=republish.get("headers_only"),
                )
            self.buckets[name] = await self.js.create_key_value(
                bucket=name, history=op["history"], republish=republish
            )
            return {"ok": True}
        if kind == "mirror":
            return await self.mirror(name, op["origin"], op["history"])
        if kind == "republished":
            return {"ok": True, "messages": self.republished.get(name, [])}
        if kind == "stream":
            return await self.stream(name)
        kv = await self.kv(name)
        key = op.get("key")
        if kind == "put":
            return {"ok": True, "revision": await kv.put(key, op["value"].encode())}
        if kind == "create":
            return {"ok": True, "revision": await kv.create(key, op["value"].encode())}
        if kind == "update":
            revision = await kv.update(key, op["value"].encode(), last=op["last"])
            return {"ok": True, "revision": revision}
        if kind in ("delete", "purge"):
            if kind == "delete":
                await kv.delete(key, last=op.get("last"))
            else:
                await kv.purge(key)
            # delete() and purge() answer True, not the marker's revision: the marker is now the
            # key's latest message, and get() reports it in the KeyNotFoundError it raises.
            try:
                await kv.get(key)
            except errors.KeyNotFoundError as marker:
                return {"ok": True, "revision": marker.entry.revision}
            return {"error": "other", "type": "NoMarker", "message": "no marker after " + kind}
        if kind == "get":
            entry = await kv.get(key, revision=op.get("revision"))
            return {"ok": True, "value": text(entry.value), "revision": entry.revision}
        if kind == "history":
            entries = await unless_empty(lambda: history_of(kv, key))
            if not entries:
                # NoKeysError: a key without any retained message.
                return {"error": "not_found"}
            return {"ok": True, "entries": entries}
        if kind == "keys":
            return await self.keys(kv, op.get("filter"))
        raise ValueError("unknown op " + kind)

    async def listen(self, bucket, subject):
        """Records what is published on `subject` for `bucket`'s republish. The subscription is
        sent on the connection before the bucket's writes are, so it sees all of them."""
        found = self.republished.setdefault(bucket, [])

        async def record(msg):
            headers = msg.headers or {}
            message = message_json(headers.get("Nats-Subject", ""), headers, msg.data)
            message["subject"] = msg.subject
            message["sequence"] = int(headers.get("Nats-Sequence", "0"))
            found.append(message)

        await self.nc.subscribe(subject, cb=record)
        await self.nc.flush(timeout=TIMEOUT)

    async def mirror(self, name, origin, history):
        """KV_<name> mirroring KV_<origin>, as a KV's own stream is configured (nats-py's
        create_key_value; its KeyValueConfig has no mirror) minus the subjects, which a mirror
        may not have: it keeps its origin's."""
        await self.js.add_stream(
            api.StreamConfig(
                name=f"KV_{name}",
                mirror=api.StreamSource(name=f"KV_{origin}"),
                allow_rollup_hdrs=True,
                deny_delete=True,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=2 * 60,
                max_consumers=-1,
                max_msgs=-1,
                max_msgs_per_subject=history,
                storage=api.StorageType.FILE,
            )
        )
        return {"ok": True}

    async def stream(self, name):
        """Every message KV_<name> holds, oldest first: sequences in its range that no longer
        hold one (superseded beyond the history, rolled up by a purge) are skipped."""
        stream = f"KV_{name}"
        info = await self.js.stream_info(stream)
        state = info.state
        messages = []
        if state.messages:
            for sequence in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await self.js.get_msg(stream, sequence)
                except errors.NotFoundError:
                    continue
                message = message_json(msg.subject, msg.headers, msg.data)
                message["sequence"] = sequence
                messages.append(message)
        answer = {"ok": True, "last_sequence": state.last_seq, "messages": messages}
        if info.mirror is not None:
            # How far the mirror is behind, and why, as the server reports it.
            answer["mirror"] = {"lag": info.mirror.lag, "active": info.mirror.active, "error": info.mirror.error}
        return answer

    async def keys(self, kv, subject_filter):
        """The live keys. nats-py's keys(filters) matches its filters as substrings on the
        client (the server before 2.10 ignores consumer filters it is given), so subject filters
        go to a watcher of the filter subject, which the server matches: the same watcher,
        minus meta_only, that keys() itself uses, so values and revisions come along. Without a
        filter, kv.keys() is answered too."""
        async def latest():
            return await entries_of(await kv.watch(subject_filter or ">", ignore_deletes=True))

        answer = {"ok": True, "entries": await unless_empty(latest)}
        if subject_filter is None:
            answer["keys"] = await unless_empty(lambda: keys_of(kv))
        return answer


async def answer(driver, op):
    try:
        return await asyncio.wait_for(driver.run(op), TIMEOUT)
    except errors.KeyNotFoundError:
        return {"error": "not_found"}
    except errors.KeyWrongLastSequenceError as error:
        return wrong_last(error.description)
    except errors.APIError as error:
        if error.err_code == WRONG_LAST_SEQUENCE:
            return wrong_last(error.description)
        return {"error": "other", "type": type(error).__name__, "message": str(error)}
    except Exception as error:  # shown to the test, which fails on it
        return {"error": "other", "type": type(error).__name__, "message": str(error)}


async def main(url):
    nc = await nats.connect(url, connect_timeout=TIMEOUT, max_reconnect_attempts=0)
    driver = Driver(nc, nc.jetstream(timeout=TIMEOUT))
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            if not line.strip():
                continue
            print(json.dumps(await answer(driver, json.loads(line))), flush=True)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
