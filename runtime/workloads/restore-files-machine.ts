/**
 * The files restore machine (issue 11): an on-demand job that restores paths of a disk or VM point
 * (`/part2/etc/hosts`, `/os/part1/home`) into one tar archive in the region's transient storage,
 * so a file can be got back without a shell on a worker. The archive keeps paths, modes, owners,
 * times, symlinks and hard links (items/tar.ts); what could not be restored is named in the job's
 * data and report, and the job fails if nothing could be.
 *
 * The report carries the archive's URL, not a SAS: reports and logs are not places for credentials.
 * Whoever may read the region's transient storage downloads it (`az storage blob download
 * --auth-mode login`), or mints a short-lived link for it (the console does); the transient
 * container's lifecycle rule deletes it after a day.
 */
import { PassThrough } from "node:stream";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { IntegrityError, NotFoundError, UsageError } from "../errors.ts";
import type { JobData, MachineDefinition } from "../jobs/machine.ts";
import { PermanentJobError } from "../jobs/machine.ts";
import { PointBrowser, splitPath } from "../items/browse.ts";
import { restorePathsToTar, type FileRestoreReport } from "../items/restore-files.ts";
import { TarWriter } from "../items/tar.ts";
import type { WorkloadEnvironment } from "./environment.ts";

/** More paths than a person picks: a larger list is a mistake or an attack on the worker. */
const MAX_PATHS = 1000;
const UPLOAD_BLOCK = 8 * 1024 * 1024;

export interface FilesRestoreJobData extends JobData {
  vault: string;
  pointId: string;
  paths: string[];
  /** The archive's name in transient storage, once written. */
  archive?: string;
  archiveUrl?: string;
  restored?: Omit<FileRestoreReport, "skipped" | "damaged"> & { notRestored: Array<{ path: string; why: string }> };
}

export function restoreFilesMachine(env: WorkloadEnvironment): MachineDefinition<FilesRestoreJobData> {
  return {
    name: "restore-files",
    initial: "restore",
    start(input): FilesRestoreJobData {
      if (!input.vault || !input.pointId) throw new PermanentJobError("a files restore job needs vault, pointId and paths");
      const paths = input.paths;
      if (!Array.isArray(paths) || paths.length === 0 || paths.length > MAX_PATHS || !paths.every((p) => typeof p === "string" && p.startsWith("/"))) {
        throw new PermanentJobError(`a files restore job needs paths: 1 to ${MAX_PATHS} absolute paths in the point, such as /part1/etc/hosts`);
      }
      for (const p of paths) splitPath(p);
      return { vault: String(input.vault), pointId: String(input.pointId), paths: paths as string[] };
    },
    retryable(error) {
      return !(error instanceof UsageError || error instanceof NotFoundError || error instanceof PermanentJobError || error instanceof IntegrityError);
    },
    metrics(data) {
      return { bytesRead: data.restored?.bytesRead ?? 0, output: data.archiveUrl };
    },
    states: {
      restore: {
        async step(ctx, data) {
          const vault = await env.openVault(data.vault);
          const browser = await PointBrowser.open(vault, data.pointId);
          // A retried attempt writes the archive again from the start, under the same name.
          const archive = `jobs/${ctx.jobId}/files.tar`;
          const spool = await mkdtemp(path.join(os.tmpdir(), "bulwark-files-"));
          const stream = new PassThrough();
          const upload = env.transient.blob(archive).uploadStream(stream, UPLOAD_BLOCK, 2, { blobHTTPHeaders: { blobContentType: "application/x-tar" }, abortSignal: ctx.signal });
          // If the restore fails, the upload must fail too, not wait for more bytes; and if the upload
          // fails (or is aborted), the restore must stop too, not wait for the upload to drain the archive.
          const failed = upload.catch((error: unknown) => {
            stream.destroy(error instanceof Error ? error : new Error(String(error)));
            return error;
          });
          let report: FileRestoreReport;
          try {
            const tar = new TarWriter(stream);
            report = await restorePathsToTar(browser, data.paths, tar, spool);
            await tar.finish();
            await upload;
          } catch (error) {
            stream.destroy(error instanceof Error ? error : new Error(String(error)));
            await failed;
            throw error;
          } finally {
            await rm(spool, { recursive: true, force: true });
          }
          const notRestored = [...report.skipped.map((s) => ({ path: s.path, why: s.reason })), ...report.damaged.map((d) => ({ path: d.path, why: d.error }))];
          ctx.log("restore-files.archive", { archive, files: report.files, bytesWritten: report.bytesWritten, bytesRead: report.bytesRead, notRestored: notRestored.length });
          if (report.files + report.symlinks + report.hardLinks + report.directories === 0) {
            throw new PermanentJobError(`nothing could be restored: ${notRestored.map((n) => `${n.path}: ${n.why}`).join("; ")}`);
          }
          const { skipped: _skipped, damaged: _damaged, ...counts } = report;
          return { done: true, data: { ...data, archive, archiveUrl: env.transient.urlOf(archive), restored: { ...counts, notRestored } } };
        },
      },
    },
  };
}
