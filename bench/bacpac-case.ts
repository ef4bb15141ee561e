import type { Bulwark } from "./tools/bulwark.ts";
export async function runBacpacBench(_bulwark: Bulwark, _outPath: string, _keep: boolean, _log: (line: string) => void): Promise<boolean> {
  return false;
}
