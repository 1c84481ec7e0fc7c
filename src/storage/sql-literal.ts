/**
 * SQL literals for the few statements that cannot take parameters (those sent with COMMIT, see
 * Db.atCommit). Quoting follows Postgres with standard_conforming_strings on: a quote is doubled,
 * and a string holding a backslash becomes an E'' string with the backslash doubled.
 */
export type LiteralValue = string | number | boolean | null | undefined | Date | Record<string, unknown> | unknown[];

function quote(text: string): string {
  if (text.includes('\u0000')) throw new TypeError('a SQL literal cannot hold NUL');
  const body = text.replaceAll("'", "''");
  return text.includes('\\') ? `E'${body.replaceAll('\\', '\\\\')}'` : `'${body}'`;
}

export function sqlLiteral(value: LiteralValue): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('a SQL literal needs a finite number');
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  if (value instanceof Date) return quote(value.toISOString());
  if (typeof value === 'string') return quote(value);
  return quote(JSON.stringify(value));
}
