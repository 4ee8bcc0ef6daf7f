/**
 * How a `TypedEventSource` connects: the browser's `EventSource` (the
 * default), or `{ transport: "fetch", ... }` for what it cannot do:
 * headers (`Authorization`), `POST` with a body, an `AbortSignal`.
 */
export type TypedEventSourceInit =
  | (EventSourceInit & { transport?: "eventsource" })
  | (FetchSourceInit & { transport: "fetch" });

/** What `onError` hands its handler. */
export type StreamError = {
  /** The HTTP status, when the server answered (the fetch transport only). */
  status?: number;
  /** What went wrong, for a log. */
  reason: string;
  /** Whether the source tries again; `false`: it is closed. */
  willRetry: boolean;
};

/**
 * An event source whose events are typed by `Events`, a map from event
 * name to the type of its data (JSON). It reconnects by itself and
 * resumes with `Last-Event-ID`, over either transport.
 */
export class TypedEventSource<Events extends { [name: string]: unknown }> {
  readonly source: EventSource | FetchEventSource;

  constructor(url: string | URL, init?: TypedEventSourceInit) {
    if (init?.transport === "fetch") {
      this.source = new FetchEventSource(url, init);
    } else {
      this.source = new EventSource(url, init);
    }
  }

  /** Calls `handler` with the data of every `name` event. */
  on<Name extends keyof Events & string>(
    name: Name,
    handler: (data: Events[Name], event: MessageEvent<string>) => void,
  ): this {
    return this.listen(name, (event) => handler(JSON.parse(event.data) as Events[Name], event));
  }

  /** Calls `handler` on the reset signal (event type `reset`): history was lost. */
  onReset(handler: (signal: ResetSignal, event: MessageEvent<string>) => void): this {
    return this.listen("reset", (event) => handler(JSON.parse(event.data) as ResetSignal, event));
  }

  /**
   * Calls `handler` when the stream fails or ends: `willRetry` says whether
   * it reconnects. The fetch transport also gives the status, so a `401`
   * (a token that expired) can be told from a network error.
   */
  onError(handler: (error: StreamError) => void): this {
    const source = this.source;
    source.addEventListener("error", (event: Event) => {
      if (event instanceof StreamErrorEvent) {
        handler({ status: event.status, reason: event.reason, willRetry: event.willRetry });
      } else {
        const willRetry = source.readyState !== 2;
        handler({ reason: willRetry ? "reconnecting" : "closed", willRetry });
      }
    });
    return this;
  }

  /** Stops the stream; it does not reconnect. */
  close(): void {
    this.source.close();
  }

  private listen(name: string, handler: (event: MessageEvent<string>) => void): this {
    (this.source as EventTarget).addEventListener(name, handler as EventListener);
    return this;
  }
}
