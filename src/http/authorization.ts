/** The credential of an `Authorization: Bearer …` header (the scheme is case-insensitive, RFC 7235 §2.1). */
export const bearerOf = (authorization: string | undefined): string | undefined => /^Bearer +([\x21-\x7e]+) *$/i.exec(authorization ?? '')?.[1];
