// Side-by-side framework majors installed as npm aliases; their types are
// the real packages' (@types/express 5 serves both Express majors here).
declare module 'express4' {
  import express = require('express');
  export = express;
}
declare module 'express5' {
  import express = require('express');
  export = express;
}
declare module 'koa2' {
  import Koa = require('koa');
  export = Koa;
}
declare module 'koa3' {
  import Koa = require('koa');
  export = Koa;
}
