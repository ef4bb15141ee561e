/**
 * A throwaway certificate authority and a server certificate for 127.0.0.1 / localhost, made with the
 * `openssl` command into a temporary folder at start. The Azure SDK sends bearer tokens only over
 * HTTPS, so the emulator serves TLS; clients trust it through NODE_EXTRA_CA_CERTS (child processes)
 * or trustEmulatorCA() (this process). Nothing here is ever committed: the folder is deleted on stop.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import { trackFolder } from "../support/cleanup.ts";

const run = promisify(execFile);

export interface EmulatorCertificates {
  folder: string;
  /** PEM file of the CA: the value for NODE_EXTRA_CA_CERTS. */
  caPath: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  remove(): Promise<void>;
}

export async function makeCertificates(): Promise<EmulatorCertificates> {
  // Tracked: removed after the test file even when the emulator fails to start after this.
  const folder = trackFolder(await mkdtemp(path.join(os.tmpdir(), "bulwark-emulator-tls-")));
  const file = (name: string) => path.join(folder, name);
  try {
    await run("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
      "-subj", "/CN=Bulwark Azure emulator CA",
      "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout", file("ca.key"), "-out", file("ca.pem"),
    ]);
    await run("openssl", [
      "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
      "-keyout", file("server.key"), "-out", file("server.csr"),
    ]);
    await writeFile(
      file("server.ext"),
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" +
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    );
    await run("openssl", [
      "x509", "-req", "-in", file("server.csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"),
      "-CAcreateserial", "-days", "2", "-extfile", file("server.ext"), "-out", file("server.pem"),
    ]);
    // The CA key is needed no longer: remove it so nothing can sign with it later.
    await rm(file("ca.key"));
  } catch (error) {
    await rm(folder, { recursive: true, force: true });
    throw new Error(`could not make the emulator's TLS certificates with openssl: ${(error as Error).message}`);
  }
  return {
    folder,
    caPath: file("ca.pem"),
    caPem: await readFile(file("ca.pem"), "utf8"),
    certPem: await readFile(file("server.pem"), "utf8"),
    keyPem: await readFile(file("server.key"), "utf8"),
    remove: () => rm(folder, { recursive: true, force: true }),
  };
}

const trusted = new Set<string>();

/**
 * Makes this process trust the emulator's CA for every new TLS connection (Node 24's
 * tls.setDefaultCACertificates), on top of the system's roots. NODE_EXTRA_CA_CERTS is read only at
 * process start, so in-process callers (vitest, the demo) use this instead.
 */
export function trustEmulatorCA(caPem: string): void {
  if (trusted.has(caPem)) return;
  trusted.add(caPem);
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), caPem]);
}
