// A stand-in for a database repository. save() validates like a database
// constraint would, and can simulate an outage.
import { sleep } from '../lib/http.mjs';
import { ValidationError } from './errors.mjs';

const users = new Map();
let nextUserId = 1000;

export function build(input) {
  return {
    id: ++nextUserId,
    name: String(input.name ?? '').trim(),
    email: String(input.email ?? '').trim().toLowerCase(),
  };
}

export async function save(user, { database } = {}) {
  await sleep(15); // a round trip to the database
  if (user.name === '') throw new ValidationError('name', 'is required');
  if (!/^[^@\s]+@[^@\s]+\.[a-z]{2,}$/.test(user.email)) throw new ValidationError('email', 'is not a valid address');
  if (database === 'down') throw new Error('database unavailable: connect ECONNREFUSED 127.0.0.1:5432 (simulated)');
  users.set(user.id, user);
  return user;
}
