import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Deferred } from "../src/async.ts";

describe("Deferred", () => {
  test("settled before anyone asks: the promise made later has the outcome", async () => {
    const resolved = new Deferred<number>();
    resolved.resolve(7);
    resolved.resolve(8);
    resolved.reject(new Error("too late"));
    assert.equal(resolved.settled, true);
    assert.equal(await resolved.promise, 7);

    const rejected = new Deferred<number>();
    rejected.reject(new Error("reset by peer"));
    rejected.resolve(1);
    await assert.rejects(rejected.promise, /reset by peer/);
  });

  test("asked first: the promise settles once, as the first call said, and stays the same promise", async () => {
    const deferred = new Deferred<string>();
    const promise = deferred.promise;
    assert.equal(deferred.settled, false);
    assert.equal(deferred.promise, promise);
    deferred.reject(new Error("closed before it was accepted"));
    deferred.resolve("accepted");
    await assert.rejects(promise, /closed before it was accepted/);
    assert.equal(deferred.promise, promise);
  });
});
