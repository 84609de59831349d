import dc from 'node:diagnostics_channel';

/**
 * `diagnostics_channel` names. Channels are global by name, so every copy of
 * the package publishes on the same ones.
 */
export const CALLBACK_CHANNEL = 'request-defer:callback';
export const SCOPE_CHANNEL = 'request-defer:scope';
export const SKIP_CHANNEL = 'request-defer:skip';

export const callbackChannel = dc.tracingChannel(CALLBACK_CHANNEL);
export const scopeChannel = dc.channel(SCOPE_CHANNEL);
export const skipChannel = dc.channel(SKIP_CHANNEL);
