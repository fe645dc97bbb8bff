"""Unit tests of scripts/streams.py (`make test` runs them): the template's mappings, filters,
the Lambda event, batching, retries, bisection, partial batch failures, the on-failure line,
shard splits and schedules, against fake streams and a fake Invoke API.

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import contextlib
import datetime
import io
import json
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import streams  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402


def record(seq, key="k", new=None, created=1_700_000_000):
    return {
        "eventID": f"id-{seq}",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": {"pk": {"S": key}},
            "NewImage": new if new is not None else {"pk": {"S": key}},
            "SequenceNumber": f"{seq:021d}",
            "SizeBytes": 10,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:stream",
    }


def source(**overrides):
    values = dict(name="Fn.Event", function="fn", table="t", batch_size=10, max_retries=2,
                  destination="!GetAtt FailedQueue.Arn")
    values.update(overrides)
    return streams.StreamSource(**values)


class Captured:
    """The JSON lines streams.log writes, while the context is open."""

    def __enter__(self):
        self.buffer = io.StringIO()
        self.redirect = contextlib.redirect_stdout(self.buffer)
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)

    def lines(self, event=None):
        parsed = [json.loads(line) for line in self.buffer.getvalue().splitlines() if line.strip()]
        return [line for line in parsed if event is None or line["event"] == event]


class FakeFunction:
    """The Invoke API: `behaviour(records, call number)` returns (outcome, result)."""

    def __init__(self, behaviour=None):
        self.calls = []
        self.behaviour = behaviour or (lambda records, call: ("ok", None))
        self.lock = threading.Lock()

    def __call__(self, function, payload):
        with self.lock:
            self.calls.append([r["dynamodb"]["SequenceNumber"] for r in payload["Records"]])
            number = len(self.calls)
        return self.behaviour(payload["Records"], number)

    def seqs(self):
        return [[int(s) for s in call] for call in self.calls]


def deliver(src, records, function):
    delivery = streams.Delivery(src, "arn:stream", function, threading.Event(), sleep=lambda _s: None)
    with Captured() as captured:
        done = delivery.deliver("shard-1", records)
    return done, captured


# ------------------------------------------------------------------------------------ template


class TemplateTest(unittest.TestCase):
    def test_the_projects_template(self):
        template = streams.load_template(streams.ROOT / "template.yaml")
        found, schedules = streams.read_sources(template, {})
        purge = [s for s in found if s.function == "kv-bucket-purge"]
        self.assertEqual(len(purge), 1)
        self.assertEqual((purge[0].table, purge[0].batch_size, purge[0].max_retries, purge[0].starting_position),
                         ("kv-buckets", 10, 20, "TRIM_HORIZON"))
        found, _ = streams.read_sources(template, {"KV_BUCKETS_TABLE": "other-buckets"})
        self.assertEqual([s.table for s in found if s.function == "kv-bucket-purge"], ["other-buckets"])

    def test_every_property_of_a_mapping_and_a_schedule(self):
        text = """
Globals:
  Function:
    Environment:
      Variables:
        KV_ITEMS_TABLE: !Ref ItemsTable
Resources:
  ItemsTable:
    Type: AWS::DynamoDB::Table
  Named:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: named-table
  Counter:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: kv-counter
    Properties:
      Events:
        Changes:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt ItemsTable.StreamArn
            StartingPosition: LATEST
            BatchSize: 50
            MaximumBatchingWindowInSeconds: 2
            MaximumRetryAttempts: 3
            MaximumRecordAgeInSeconds: 120
            BisectBatchOnFunctionError: true
            FunctionResponseTypes: [ReportBatchItemFailures]
            ParallelizationFactor: 4
            DestinationConfig:
              OnFailure:
                Type: SQS
                Destination: !GetAtt FailedQueue.Arn
        Sweep:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
        Off:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
            Enabled: false
  Mapping:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      EventSourceArn: !GetAtt Named.StreamArn
      FunctionName: !Ref Counter
      StartingPosition: TRIM_HORIZON
"""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "template.yaml"
            path.write_text(text)
            found, schedules = streams.read_sources(streams.load_template(path), {})
        changes, mapping = found
        self.assertEqual(changes.table, "kv-items")
        self.assertEqual((changes.starting_position, changes.batch_size, changes.batching_window, changes.max_retries,
                          changes.max_record_age, changes.bisect, changes.report_failures, changes.parallelization,
                          changes.destination),
                         ("LATEST", 50, 2, 3, 120, True, True, 4, "!GetAtt FailedQueue.Arn"))
        self.assertEqual((mapping.name, mapping.function, mapping.table, mapping.batch_size, mapping.max_retries),
                         ("Mapping", "kv-counter", "named-table", 100, -1))
        self.assertEqual([(s.name, s.function, s.expression) for s in schedules],
                         [("Counter.Sweep", "kv-counter", "rate(1 minute)")])

    def test_refuses_what_lambda_refuses(self):
        tables = {"T": "t"}
        base = {"Stream": {"Fn::GetAtt": ["T", "StreamArn"]}, "StartingPosition": "TRIM_HORIZON"}
        for bad in ({"BatchSize": 0}, {"BatchSize": 10_001}, {"StartingPosition": "AT_TIMESTAMP"},
                    {"FunctionResponseTypes": ["Other"]}, {"ParallelizationFactor": 11},
                    {"MaximumRecordAgeInSeconds": 30},
                    {"FilterCriteria": {"Filters": [{"Pattern": "{not json"}]}},
                    {"FilterCriteria": {"Filters": [{"Pattern": '{"a": [{"cidr": "10.0.0.0/8"}]}'}]}},
                    {"Stream": {"Fn::GetAtt": ["Unknown", "StreamArn"]}}):
            with self.subTest(bad=bad), self.assertRaises(streams.ConfigError):
                streams.stream_source("x", "fn", {**base, **bad}, tables)


# ------------------------------------------------------------------------------------ filters


class FilterTest(unittest.TestCase):
    def check(self, pattern, data):
        streams.validate_pattern(pattern)
        return streams.pattern_matches(pattern, data)

    def test_the_templates_deleting_filter(self):
        pattern = json.loads('{"dynamodb": {"NewImage": {"deleting": {"N": [{"exists": true}]}}}}')
        self.assertTrue(self.check(pattern, record(1, new={"deleting": {"N": "5"}, "bucket": {"S": "b"}})))
        self.assertFalse(self.check(pattern, record(1, new={"bucket": {"S": "b"}})))
        removal = record(1)
        del removal["dynamodb"]["NewImage"]
        self.assertFalse(self.check(pattern, removal))

    def test_exact_values_and_or(self):
        self.assertTrue(self.check({"eventName": ["INSERT", "MODIFY"]}, {"eventName": "MODIFY"}))
        self.assertFalse(self.check({"eventName": ["INSERT"]}, {"eventName": "MODIFY"}))
        self.assertFalse(self.check({"n": [1]}, {"n": True}))
        self.assertFalse(self.check({"n": ["1"]}, {"n": 1}))
        self.assertTrue(self.check({"n": [1]}, {"n": 1.0}))
        self.assertTrue(self.check({"n": [None]}, {"n": None}))
        self.assertTrue(self.check({"tags": ["b"]}, {"tags": ["a", "b"]}))
        self.assertTrue(self.check({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}))
        self.assertFalse(self.check({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "z"}))

    def test_prefix_suffix_wildcard_ignore_case(self):
        self.assertTrue(self.check({"k": [{"prefix": "user/"}]}, {"k": "user/1"}))
        self.assertFalse(self.check({"k": [{"prefix": "user/"}]}, {"k": "admin/1"}))
        self.assertFalse(self.check({"k": [{"prefix": "1"}]}, {"k": 12}))
        self.assertTrue(self.check({"k": [{"suffix": ".json"}]}, {"k": "a.json"}))
        self.assertTrue(self.check({"k": [{"equals-ignore-case": "ABC"}]}, {"k": "abc"}))
        self.assertTrue(self.check({"k": [{"wildcard": "a*c*e"}]}, {"k": "abcde"}))
        self.assertFalse(self.check({"k": [{"wildcard": "a*c*e"}]}, {"k": "abde"}))

    def test_exists(self):
        self.assertTrue(self.check({"k": [{"exists": False}]}, {}))
        self.assertFalse(self.check({"k": [{"exists": False}]}, {"k": "v"}))
        self.assertTrue(self.check({"k": [{"exists": True}]}, {"k": ""}))
        self.assertFalse(self.check({"k": [{"exists": True}]}, {}))
        self.assertFalse(self.check({"k": [{"exists": True}]}, {"k": {"nested": 1}}))
        self.assertTrue(self.check({"a": {"b": [{"exists": False}]}}, {}))

    def test_numeric_ranges(self):
        rule = {"n": [{"numeric": [">", 0, "<=", 5]}]}
        self.assertTrue(self.check(rule, {"n": 5}))
        self.assertFalse(self.check(rule, {"n": 0}))
        self.assertFalse(self.check(rule, {"n": "3"}))  # a DynamoDB N is a string: no numeric match
        self.assertTrue(self.check({"n": [{"numeric": ["=", 3]}]}, {"n": 3}))
        with self.assertRaises(ValueError):
            streams.validate_pattern({"n": [{"numeric": [">"]}]})

    def test_anything_but(self):
        self.assertTrue(self.check({"e": [{"anything-but": ["REMOVE"]}]}, {"e": "INSERT"}))
        self.assertFalse(self.check({"e": [{"anything-but": ["REMOVE"]}]}, {"e": "REMOVE"}))
        self.assertFalse(self.check({"e": [{"anything-but": "REMOVE"}]}, {}))
        self.assertTrue(self.check({"e": [{"anything-but": {"prefix": "tmp/"}}]}, {"e": "keep"}))
        self.assertFalse(self.check({"e": [{"anything-but": {"prefix": "tmp/"}}]}, {"e": "tmp/x"}))

    def test_several_filters_are_alternatives(self):
        filters = [{"eventName": ["INSERT"]}, {"eventName": ["REMOVE"]}]
        self.assertTrue(streams.passes(filters, {"eventName": "REMOVE"}))
        self.assertFalse(streams.passes(filters, {"eventName": "MODIFY"}))
        self.assertTrue(streams.passes([], {"eventName": "MODIFY"}))


# ------------------------------------------------------------------------------------ the event


class RecordTest(unittest.TestCase):
    def test_lambda_record_from_boto3(self):
        raw = {
            "eventID": "e1", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": "ddblocal",
            "dynamodb": {
                "ApproximateCreationDateTime": datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
                "Keys": {"pk": {"S": "a"}},
                "NewImage": {"pk": {"S": "a"}, "b": {"B": b"\x00\x01"}, "l": {"L": [{"BS": [b"\xff"]}]}},
                "SequenceNumber": "000000000000000000007", "SizeBytes": 12, "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
        made = streams.lambda_record(raw, "arn:aws:dynamodb:x:table/t/stream/1", "eu-west-1")
        self.assertEqual(list(made), ["eventID", "eventName", "eventVersion", "eventSource", "awsRegion",
                                      "dynamodb", "eventSourceARN"])
        self.assertEqual(made["awsRegion"], "eu-west-1")
        self.assertEqual(made["dynamodb"]["ApproximateCreationDateTime"], 1767323040)
        self.assertEqual(made["dynamodb"]["NewImage"]["b"], {"B": "AAE="})
        self.assertEqual(made["dynamodb"]["NewImage"]["l"], {"L": [{"BS": ["/w=="]}]})
        self.assertEqual(made["eventSourceARN"], "arn:aws:dynamodb:x:table/t/stream/1")
        json.dumps(made)

    def test_a_ttl_deletion_is_a_remove_by_the_service(self):
        raw = {"eventID": "e", "eventName": "UNKNOWN_TO_SDK_VERSION", "eventVersion": "1.1",
               "dynamodb": {"Keys": {"pk": {"S": "a"}}, "OldImage": {"pk": {"S": "a"}}, "SequenceNumber": "1"}}
        made = streams.lambda_record(raw, "arn", "us-east-1")
        self.assertEqual(made["eventName"], "REMOVE")
        self.assertEqual(made["userIdentity"], {"type": "Service", "principalId": "dynamodb.amazonaws.com"})


# ------------------------------------------------------------------------------------ delivery


class DeliveryTest(unittest.TestCase):
    def test_batches_of_at_most_batch_size_in_order(self):
        function = FakeFunction()
        done, captured = deliver(source(batch_size=10), [record(i) for i in range(1, 26)], function)
        self.assertTrue(done)
        self.assertEqual(function.seqs(), [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))])
        lines = captured.lines("delivery")
        self.assertEqual([(line["records"], line["outcome"]) for line in lines], [(10, "ok"), (10, "ok"), (5, "ok")])
        self.assertEqual((lines[0]["first"], lines[0]["last"]), (f"{1:021d}", f"{10:021d}"))

    def test_a_function_error_is_retried_then_sent_to_the_destination(self):
        function = FakeFunction(lambda records, call: ("error", {"errorType": "KvUnavailable", "errorMessage": "x"}))
        done, captured = deliver(source(max_retries=2), [record(1), record(2)], function)
        self.assertTrue(done)
        self.assertEqual(function.seqs(), [[1, 2]] * 3)  # the first attempt and 2 retries
        failure, = captured.lines("on-failure")
        self.assertEqual(failure["destination"], "!GetAtt FailedQueue.Arn")
        info = failure["DDBStreamBatchInfo"]
        self.assertEqual((info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"], info["shardId"],
                          info["streamArn"]), (f"{1:021d}", f"{2:021d}", 2, "shard-1", "arn:stream"))
        self.assertEqual(failure["requestContext"]["condition"], "RetryAttemptsExhausted")
        self.assertEqual(failure["requestContext"]["approximateInvokeCount"], 3)
        self.assertEqual(failure["responseContext"]["functionError"], "Unhandled")

    def test_bisection_isolates_the_failing_record(self):
        poison = f"{5:021d}"

        def behaviour(records, _call):
            if any(r["dynamodb"]["SequenceNumber"] == poison for r in records):
                return "error", {"errorType": "Boom", "errorMessage": "poison"}
            return "ok", None

        function = FakeFunction(behaviour)
        done, captured = deliver(source(bisect=True, max_retries=1), [record(i) for i in range(1, 9)], function)
        self.assertTrue(done)
        self.assertEqual(function.seqs(), [
            [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8], [5, 6], [5], [5], [6], [7, 8],
        ])
        failure, = captured.lines("on-failure")
        info = failure["DDBStreamBatchInfo"]
        self.assertEqual((info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]), (poison, poison, 1))
        delivered = sorted(s for call, line in zip(function.seqs(), captured.lines("delivery"))
                           if line["outcome"] == "ok" for s in call)
        self.assertEqual(delivered, [1, 2, 3, 4, 6, 7, 8])

    def test_partial_batch_failures_retry_from_the_first_failed_record(self):
        def behaviour(records, call):
            if call == 1:
                return "ok", {"batchItemFailures": [{"itemIdentifier": records[5]["dynamodb"]["SequenceNumber"]},
                                                    {"itemIdentifier": records[3]["dynamodb"]["SequenceNumber"]}]}
            return "ok", {"batchItemFailures": []}

        function = FakeFunction(behaviour)
        done, captured = deliver(source(report_failures=True), [record(i) for i in range(1, 8)], function)
        self.assertTrue(done)
        self.assertEqual(function.seqs(), [[1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7]])
        self.assertEqual([line["outcome"] for line in captured.lines("delivery")], ["partial", "ok"])
        self.assertEqual(captured.lines("delivery")[0]["retry_from"], f"{4:021d}")
        self.assertEqual(captured.lines("on-failure"), [])

    def test_partial_failures_until_exhausted_send_the_rest_on(self):
        function = FakeFunction(lambda records, call: (
            "ok", {"batchItemFailures": [{"itemIdentifier": records[-1]["dynamodb"]["SequenceNumber"]}]}))
        done, captured = deliver(source(report_failures=True, max_retries=1), [record(i) for i in range(1, 4)], function)
        self.assertEqual(function.seqs(), [[1, 2, 3], [3]])
        failure, = captured.lines("on-failure")
        self.assertEqual(failure["DDBStreamBatchInfo"]["startSequenceNumber"], f"{3:021d}")

    def test_an_invalid_item_identifier_fails_the_whole_batch(self):
        function = FakeFunction(lambda records, call: (
            ("ok", {"batchItemFailures": [{"itemIdentifier": "no-such-record"}]}) if call == 1 else ("ok", {})))
        deliver(source(report_failures=True), [record(1), record(2)], function)
        self.assertEqual(function.seqs(), [[1, 2], [1, 2]])

    def test_without_report_batch_item_failures_the_response_is_ignored(self):
        function = FakeFunction(lambda records, call: ("ok", {"batchItemFailures": [{"itemIdentifier": "x"}]}))
        deliver(source(), [record(1)], function)
        self.assertEqual(function.seqs(), [[1]])

    def test_records_older_than_the_maximum_age_go_to_the_destination(self):
        now = time.time()
        function = FakeFunction()
        delivery = streams.Delivery(source(max_record_age=60), "arn:stream", function, threading.Event(),
                                    sleep=lambda _s: None, now=lambda: now)
        with Captured() as captured:
            delivery.deliver("shard-1", [record(1, created=int(now) - 3600), record(2, created=int(now))])
        self.assertEqual(function.seqs(), [[2]])
        failure, = captured.lines("on-failure")
        self.assertEqual(failure["requestContext"]["condition"], "RecordAgeExceeded")
        self.assertEqual(failure["DDBStreamBatchInfo"]["startSequenceNumber"], f"{1:021d}")

    def test_an_unreachable_invoke_api_is_retried_without_using_retries(self):
        def behaviour(records, call):
            if call <= 3:
                raise streams.Unreachable("connection refused")
            return "ok", None

        function = FakeFunction(behaviour)
        delivery = streams.Delivery(source(max_retries=0), "arn:stream", function, threading.Event(),
                                    sleep=lambda _s: None)
        with Captured() as captured:
            self.assertTrue(delivery.deliver("shard-1", [record(1)]))
        self.assertEqual(len(function.calls), 4)
        self.assertEqual(captured.lines("on-failure"), [])

    def test_parallelization_keeps_each_keys_order(self):
        records = [record(i, key=f"k{i % 3}") for i in range(1, 31)]
        split = streams.lanes(records, 4, "pk")
        self.assertEqual(sorted(streams.sequence(r) for lane in split for r in lane), sorted(streams.sequence(r) for r in records))
        for lane in split:
            for key in {r["dynamodb"]["Keys"]["pk"]["S"] for r in lane}:
                seqs = [streams.sequence(r) for r in lane if r["dynamodb"]["Keys"]["pk"]["S"] == key]
                self.assertEqual(seqs, sorted(seqs))
        keys_per_lane = [{r["dynamodb"]["Keys"]["pk"]["S"] for r in lane} for lane in split]
        self.assertEqual(sum(len(keys) for keys in keys_per_lane), 3)  # a key lives in one lane


# ------------------------------------------------------------------------------------ shards


def trimmed():
    return ClientError({"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}}, "GetRecords")


class FakeStreams:
    """A stream whose parent shard closed and split in two; the first GetRecords of each
    shard says Trimmed, as DynamoDB Local does on a fresh stream."""

    def __init__(self, shards):
        self.shards = shards  # id -> (parent, [raw records], closed)
        self.trimmed_once = set()
        self.lock = threading.Lock()

    def describe_stream(self, StreamArn, ExclusiveStartShardId=None):
        ids = sorted(self.shards)
        if ExclusiveStartShardId:
            ids = [i for i in ids if i > ExclusiveStartShardId]
        page = ids[:2]  # paged, to follow LastEvaluatedShardId
        shards = []
        for shard_id in page:
            parent, records, closed = self.shards[shard_id]
            entry = {"ShardId": shard_id, "SequenceNumberRange": {"StartingSequenceNumber": "1"}}
            if parent:
                entry["ParentShardId"] = parent
            if closed:
                entry["SequenceNumberRange"]["EndingSequenceNumber"] = "999"
            shards.append(entry)
        description = {"Shards": shards}
        if len(ids) > 2:
            description["LastEvaluatedShardId"] = page[-1]
        return {"StreamDescription": description}

    def get_shard_iterator(self, StreamArn, ShardId, ShardIteratorType, SequenceNumber=None):
        position = 0
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            position = [r["dynamodb"]["SequenceNumber"] for r in self.shards[ShardId][1]].index(SequenceNumber) + 1
        return {"ShardIterator": json.dumps([ShardId, position])}

    def get_records(self, ShardIterator, Limit):
        shard_id, position = json.loads(ShardIterator)
        with self.lock:
            if shard_id not in self.trimmed_once:
                self.trimmed_once.add(shard_id)
                raise trimmed()
        _parent, records, closed = self.shards[shard_id]
        page = records[position:position + 2]  # small pages: several GetRecords per shard
        next_position = position + len(page)
        response = {"Records": page}
        if not (closed and next_position >= len(records)):
            response["NextShardIterator"] = json.dumps([shard_id, next_position])
        return response


class FakeDynamoDB:
    def describe_table(self, TableName):
        return {"Table": {"LatestStreamArn": "arn:stream", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}}


def raw(seq, key="k", deleting=True):
    image = {"pk": {"S": key}}
    if deleting:
        image["deleting"] = {"N": "1"}
    return {"eventID": str(seq), "eventName": "MODIFY", "eventVersion": "1.1",
            "dynamodb": {"Keys": {"pk": {"S": key}}, "NewImage": image, "SequenceNumber": f"{seq:021d}",
                         "SizeBytes": 1, "StreamViewType": "NEW_IMAGE"}}


class ShardTest(unittest.TestCase):
    def run_mapping(self, fake, src, expected_records, timeout=10):
        function = FakeFunction()
        stop = threading.Event()
        mapping = streams.Mapping(src, FakeDynamoDB(), fake, function, stop, "us-east-1", poll_interval=0.01,
                                  describe_interval=0.02, sleep=lambda _s: None)
        with Captured() as captured:
            thread = threading.Thread(target=mapping.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + timeout
            while sum(len(call) for call in function.calls) < expected_records and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            stop.set()
            thread.join(5)
        self.assertFalse(thread.is_alive())
        return function, captured

    def test_children_after_their_parent_across_a_split_with_filters(self):
        fake = FakeStreams({
            "shard-a-parent": (None, [raw(1), raw(2, deleting=False), raw(3), raw(4), raw(5)], True),
            "shard-b-child": ("shard-a-parent", [raw(10), raw(11)], False),
            "shard-c-child": ("shard-a-parent", [raw(20)], True),
        })
        function, captured = self.run_mapping(fake, source(batch_size=2, filters=[
            {"dynamodb": {"NewImage": {"deleting": {"N": [{"exists": True}]}}}}]), expected_records=7)
        delivered = function.seqs()
        flat = [s for call in delivered for s in call]
        self.assertEqual(sorted(flat), [1, 3, 4, 5, 10, 11, 20])  # 2 is filtered out
        parent_done = max(flat.index(s) for s in (1, 3, 4, 5))
        self.assertTrue(all(flat.index(s) > parent_done for s in (10, 11, 20)), delivered)
        self.assertTrue(all(len(call) <= 2 for call in delivered))
        self.assertEqual([s for s in flat if s < 10], [1, 3, 4, 5])
        done = [line["shard"] for line in captured.lines("shard-done")]
        self.assertIn("shard-a-parent", done)
        self.assertIn("shard-c-child", done)


# ------------------------------------------------------------------------------------ schedules


class ScheduleTest(unittest.TestCase):
    def test_rates(self):
        self.assertEqual(streams.parse_schedule("rate(1 minute)"), ("rate", 60))
        self.assertEqual(streams.parse_schedule("rate(2 hours)"), ("rate", 7200))
        for bad in ("rate(0 minutes)", "rate(1 second)", "every minute", None):
            with self.subTest(bad=bad), self.assertRaises(streams.ConfigError):
                streams.parse_schedule(bad)

    def test_cron(self):
        at = datetime.datetime(2026, 3, 6, 10, 7, 30, tzinfo=datetime.timezone.utc).timestamp()  # a Friday
        nxt = lambda expr: datetime.datetime.fromtimestamp(  # noqa: E731
            streams.next_time(streams.parse_schedule(expr), at), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M %a")
        self.assertEqual(nxt("cron(*/15 * * * ? *)"), "2026-03-06 10:15 Fri")
        self.assertEqual(nxt("cron(0 12 * * ? *)"), "2026-03-06 12:00 Fri")
        self.assertEqual(nxt("cron(0 8 ? * MON-WED *)"), "2026-03-09 08:00 Mon")
        self.assertEqual(nxt("cron(30 2 1 JAN ? *)"), "2027-01-01 02:30 Fri")
        with self.assertRaises(streams.ConfigError):
            streams.parse_schedule("cron(0 0 L * ? *)")

    def test_the_scheduled_event_and_its_invocations(self):
        schedule = streams.ScheduleSource(name="Fn.Sweep", function="fn", expression="rate(1 minute)")
        event = streams.scheduled_event(schedule, 1_767_323_040, "us-east-1")
        self.assertEqual(event["detail-type"], "Scheduled Event")
        self.assertEqual((event["source"], event["time"], event["detail"], event["version"]),
                         ("aws.events", "2026-01-02T03:04:00Z", {}, "0"))
        self.assertEqual(event["resources"], ["arn:aws:events:us-east-1:000000000000:rule/Fn.Sweep"])
        fixed = streams.ScheduleSource(name="s", function="fn", expression="rate(1 minute)", payload={"a": 1})
        self.assertEqual(streams.scheduled_event(fixed, 0, "us-east-1"), {"a": 1})

        # A fast clock: three firings of rate(1 minute), each with a fresh event.
        clock = [1000.0]
        payloads = []
        stop = threading.Event()

        def invoke(function, payload):
            payloads.append((function, payload))
            if len(payloads) == 3:
                stop.set()
            return "ok", None

        class FastStop:
            def wait(self, seconds):
                clock[0] += seconds
                return stop.is_set()

        with Captured() as captured:
            streams.run_schedule(schedule, invoke, FastStop(), "us-east-1", now=lambda: clock[0])
        self.assertEqual([p["time"] for _f, p in payloads], [streams.scheduled_event(schedule, t, "x")["time"]
                                                              for t in (1060, 1120, 1180)])
        self.assertEqual(len({p["id"] for _f, p in payloads}), 3)
        self.assertEqual([line["outcome"] for line in captured.lines("schedule")], ["ok"] * 3)


if __name__ == "__main__":
    unittest.main()
