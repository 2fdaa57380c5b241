// Errors of the client: one base class and a subclass per status a caller handles apart.
// A failed call rejects with one; a failed item of a batch or stream is returned in its place.

/** One invalid field of a request: its path (`order.events[0].status`, `now`) and what is wrong. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A call or an item the service did not decide. `code` is the gRPC status name, `reason` the
 * service's stable snake_case error code (`request_invalid`, `no_bundle`, ...) when it sent one. */
export class OrderPolicyError extends Error {
  readonly code: string;
  readonly reason: string;
  readonly fieldViolations: readonly FieldViolation[];

  constructor(message: string, opts: { code?: string; reason?: string; fieldViolations?: FieldViolation[] } = {}) {
    super(message);
    this.name = new.target.name;
    this.code = opts.code ?? "UNKNOWN";
    this.reason = opts.reason ?? "";
    this.fieldViolations = opts.fieldViolations ?? [];
  }

  /** The paths of the invalid fields, in order. */
  get fields(): string[] {
    return this.fieldViolations.map((v) => v.field);
  }
}

/** The request is invalid (`INVALID_ARGUMENT`); `fieldViolations` say which fields. */
export class InvalidArgument extends OrderPolicyError {}
/** No server could answer, or none has a bundle loaded (`UNAVAILABLE`), after the retries. */
export class Unavailable extends OrderPolicyError {}
/** The call's deadline passed (`DEADLINE_EXCEEDED`). */
export class DeadlineExceeded extends OrderPolicyError {}
/** The pinned `bundleRevision` is not loaded on the server (`FAILED_PRECONDITION`). */
export class RevisionNotLoaded extends OrderPolicyError {}

const BY_CODE: Record<string, typeof OrderPolicyError> = {
  INVALID_ARGUMENT: InvalidArgument,
  UNAVAILABLE: Unavailable,
  DEADLINE_EXCEEDED: DeadlineExceeded,
  FAILED_PRECONDITION: RevisionNotLoaded,
};

/** The error class of a gRPC status name. */
export function errorClass(code: string): typeof OrderPolicyError {
  return BY_CODE[code] ?? OrderPolicyError;
}
