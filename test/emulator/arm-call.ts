/** One raw Resource Manager request to the emulator, as the conformance tests replay the specs' examples. */
export interface ArmReply {
  status: number;
  headers: Headers;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** `url` is absolute (a monitor URL the emulator returned) or a path under `armEndpoint`. */
export async function armCall(armEndpoint: string, token: string, method: string, url: string, body?: unknown): Promise<ArmReply> {
  const response = await fetch(url.startsWith("http") ? url : `${armEndpoint}${url}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
}
