/** A failed validation: both Express and Koa answer with `status` (422). */
export class ValidationError extends Error {
  constructor(field, problem) {
    super(`${field} ${problem}`);
    this.name = 'ValidationError';
    this.status = 422;
    this.expose = true;
    this.field = field;
  }
}
