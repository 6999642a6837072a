import assert from "node:assert/strict";
import { describe, test } from "node:test";
import process from "node:process";
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

  test("quiet: a rejection nobody handles is not reported; the promise still rejects", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (event: unknown) => unhandled.push(event);
    process.on("unhandledRejection", onUnhandled);
    try {
      const quiet = new Deferred<void>(true);
      void quiet.promise;
      quiet.reject(new Error("refused"));
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(unhandled, []);
      await assert.rejects(quiet.promise, /refused/);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });
});
