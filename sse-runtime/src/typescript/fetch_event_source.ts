/**
 * The data of the reset signal: why the client must reload its state, and,
 * on a stream over several keys, which key it concerns (absent when it
 * concerns them all).
 */
export type ResetSignal = {
  reason: "history_expired" | "unknown_id" | "invalid_id" | "lagged";
  key?: string;
};

/**
 * The fetch transport's options: what `EventSource` cannot send.
 */
export type FetchSourceInit = {
  /** The request method (default `GET`); `POST` with `body` for a stream that takes a request. */
  method?: string;
  /** Sent on every connection, so `Authorization: Bearer ...` keeps a token out of the URL. */
  headers?: Record<string, string>;
  /** Sent on every connection: a string, so a reconnect can send it again. */
  body?: string;
  /** Aborting it closes the stream for good. */
  signal?: AbortSignal;
  /** Cookies: as `fetch` (default `same-origin`). */
  credentials?: RequestCredentials;
  /** Closes the connection while the page is hidden, and resumes with `Last-Event-ID` when it shows. */
  pauseWhenHidden?: boolean;
  /** The wait before a reconnect until the server sends `retry:`, in ms (default 3000). */
  retryMs?: number;
  /** The longest wait between two attempts after failures, in ms (default 30000). */
  maxBackoffMs?: number;
};

/**
 * Why a stream failed: the HTTP status when the server answered, what went
 * wrong, and whether the source tries again (`false`: it is closed).
 */
export class StreamErrorEvent extends Event {
  constructor(
    readonly status: number | undefined,
    readonly reason: string,
    readonly willRetry: boolean,
  ) {
    super("error");
  }
}

/**
 * `EventSource` over `fetch`: the same events (`message`, named types,
 * `open`, `error`), parsed by the WHATWG rules, with headers, a method and
 * a body. Like `EventSource`, it reconnects with `Last-Event-ID` after the
 * server's `retry:` (3 s until one is sent) when a stream ends; after a
 * network error, a `5xx`, `408` or `429` it doubles that wait per failure,
 * up to `maxBackoffMs`, each wait drawn from the upper half at random. It
 * stops on `204` and on any other `4xx` (an `error` with the status and
 * `willRetry: false`). Works in browsers and in Node 20+.
 */
export class FetchEventSource extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;

  /** `CONNECTING`, `OPEN` or `CLOSED`, as `EventSource.readyState`. */
  readyState = FetchEventSource.CONNECTING;
  /** What a reconnect resumes from. */
  lastEventId = "";
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent<string>) => void) | null = null;
  onerror: ((event: StreamErrorEvent) => void) | null = null;
  readonly url: string;

  private readonly init: FetchSourceInit;
  private retryMs = 3000;
  private failures = 0;
  private paused = false;
  private connection: AbortController | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  // The parser's state (WHATWG HTML 9.2.6).
  private partialLine = "";
  private afterCR = false;
  private eventType = "";
  private data = "";
  private idBuffer = "";

  constructor(url: string | URL, init: FetchSourceInit = {}) {
    super();
    this.url = String(url);
    this.init = init;
    this.retryMs = init.retryMs ?? 3000;
    if (init.signal?.aborted) {
      this.readyState = FetchEventSource.CLOSED;
      return;
    }
    init.signal?.addEventListener("abort", () => this.close());
    if (init.pauseWhenHidden && typeof document !== "undefined") {
      document.addEventListener("visibilitychange", this.onVisibility);
    }
    void this.connect();
  }

  /** Stops the stream for good. */
  close(): void {
    this.readyState = FetchEventSource.CLOSED;
    clearTimeout(this.timer);
    this.connection?.abort();
    if (typeof document !== "undefined") {
      document.removeEventListener("visibilitychange", this.onVisibility);
    }
  }

  private readonly onVisibility = (): void => {
    if (this.readyState === FetchEventSource.CLOSED) return;
    if (document.hidden) {
      this.paused = true;
      clearTimeout(this.timer);
      this.connection?.abort();
      this.readyState = FetchEventSource.CONNECTING;
    } else if (this.paused) {
      this.paused = false;
      void this.connect();
    }
  };

  private async connect(): Promise<void> {
    if (this.readyState === FetchEventSource.CLOSED || this.paused) return;
    this.readyState = FetchEventSource.CONNECTING;
    const connection = new AbortController();
    this.connection = connection;
    const headers: Record<string, string> = { ...this.init.headers, accept: "text/event-stream" };
    if (this.lastEventId !== "") headers["last-event-id"] = this.lastEventId;
    let response: Response;
    try {
      response = await fetch(this.url, {
        method: this.init.method ?? "GET",
        headers,
        body: this.init.body,
        credentials: this.init.credentials,
        cache: "no-store",
        signal: connection.signal,
      });
    } catch (error) {
      if (!connection.signal.aborted) this.failed(undefined, String(error));
      return;
    }
    const status = response.status;
    const contentType = response.headers.get("content-type") ?? "";
    if (status === 204) {
      return this.stop(status, "the server ended the stream (204)");
    }
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      return this.stop(status, `the server refused the stream (${status})`);
    }
    if (!response.ok) {
      return this.failed(status, `the server failed (${status})`);
    }
    if (contentType.split(";")[0].trim().toLowerCase() !== "text/event-stream" || !response.body) {
      return this.stop(status, `not an event stream: ${contentType || "no content type"}`);
    }
    this.readyState = FetchEventSource.OPEN;
    this.failures = 0;
    this.partialLine = "";
    this.afterCR = false;
    this.eventType = "";
    this.data = "";
    this.idBuffer = this.lastEventId;
    const open = new Event("open");
    this.onopen?.(open);
    this.dispatchEvent(open);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.feed(decoder.decode(value, { stream: true }));
        if (connection.signal.aborted) return;
      }
    } catch (error) {
      if (!connection.signal.aborted) this.failed(undefined, String(error));
      return;
    }
    if (connection.signal.aborted || this.readyState === FetchEventSource.CLOSED) return;
    // The stream ended: reconnect after `retry`, as EventSource does.
    this.readyState = FetchEventSource.CONNECTING;
    this.report(undefined, "the stream ended", true);
    this.schedule(this.retryMs);
  }

  /** A failure that is retried after a backoff. */
  private failed(status: number | undefined, reason: string): void {
    this.failures += 1;
    const doubled = this.retryMs * 2 ** Math.min(this.failures - 1, 16);
    const capped = Math.min(doubled, Math.max(this.init.maxBackoffMs ?? 30000, this.retryMs));
    this.readyState = FetchEventSource.CONNECTING;
    this.report(status, reason, true);
    this.schedule(capped / 2 + (Math.random() * capped) / 2);
  }

  /** A refusal: the stream is closed for good. */
  private stop(status: number, reason: string): void {
    this.close();
    this.report(status, reason, false);
  }

  private report(status: number | undefined, reason: string, willRetry: boolean): void {
    const event = new StreamErrorEvent(status, reason, willRetry);
    this.onerror?.(event);
    this.dispatchEvent(event);
  }

  private schedule(waitMs: number): void {
    if (this.readyState === FetchEventSource.CLOSED) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.connect(), waitMs);
  }

  /** Lines end with CR, LF or CRLF, even split across chunks. */
  private feed(text: string): void {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code === 10 && this.afterCR) {
        this.afterCR = false;
        start = i + 1;
        continue;
      }
      this.afterCR = false;
      if (code === 10 || code === 13) {
        const line = this.partialLine + text.slice(start, i);
        this.partialLine = "";
        this.afterCR = code === 13;
        start = i + 1;
        this.line(line);
        if (this.readyState === FetchEventSource.CLOSED) return;
      }
    }
    this.partialLine += text.slice(start);
  }

  private line(line: string): void {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventType = value;
    else if (field === "data") this.data += `${value}\n`;
    else if (field === "id" && !value.includes("\0")) this.idBuffer = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) this.retryMs = Number(value);
  }

  private dispatch(): void {
    this.lastEventId = this.idBuffer;
    const type = this.eventType || "message";
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    const hasData = this.data !== "";
    this.eventType = "";
    this.data = "";
    if (!hasData) return;
    const event = new MessageEvent<string>(type, { data, lastEventId: this.lastEventId });
    if (type === "message") this.onmessage?.(event);
    this.dispatchEvent(event);
  }
}

