/**
 * A VM restore in its own process, for the kill test of test/azure/vm.test.ts: restoreVirtualMachine
 * as a worker's restore job runs it (a restore id that a later run shares), from a local vault.
 * With BULWARK_TEST_PAUSE_AT_DISK=N it stops at the first progress of the N-th disk it writes (0 is
 * the OS disk): that disk exists, in ActiveUpload with its write SAS open and some bytes written,
 * and the disks before it are finished. It then prints {"event":"test.paused"} and blocks until it
 * is killed. Otherwise it prints {"event":"test.done", ...} when the restore finished.
 * Environment: the emulator's (Azure credentials, BULWARK_ARM_ENDPOINT, NODE_EXTRA_CA_CERTS),
 * BULWARK_PASSPHRASE, BULWARK_TEST_VAULT, BULWARK_TEST_POINT, BULWARK_TEST_TARGET, BULWARK_TEST_NIC,
 * BULWARK_TEST_RESTORE_ID. Test code only.
 */
import { azureContext } from "../../runtime/azure/context.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { restoreVirtualMachine } from "../../runtime/sources/azure-vm.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";

const need = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const pauseAt = process.env.BULWARK_TEST_PAUSE_AT_DISK === undefined ? undefined : Number(process.env.BULWARK_TEST_PAUSE_AT_DISK);
const vault = await Vault.open(new LocalFolderStore(need("BULWARK_TEST_VAULT")), new PassphraseProvider(need("BULWARK_PASSPHRASE")));
const point = await vault.readPoint(need("BULWARK_TEST_POINT"));
const pool = new CodecPool(vault.master, { threads: 1 });
let disk = 0;
let last = -1;
const result = await restoreVirtualMachine(await azureContext(process.env), vault, pool, point, need("BULWARK_TEST_TARGET"), {
  nicIds: [need("BULWARK_TEST_NIC")],
  restoreId: need("BULWARK_TEST_RESTORE_ID"),
  onProgress(done) {
    // Progress counts per disk: a smaller count than the last one is the next disk.
    if (done < last) disk++;
    last = done;
    if (pauseAt !== undefined && disk === pauseAt) {
      process.stdout.write(`${JSON.stringify({ event: "test.paused", disk })}\n`); // synchronous on a pipe
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // blocks until the process is killed
    }
  },
});
await pool.close();
process.stdout.write(`${JSON.stringify({ event: "test.done", ...result })}\n`);
