import { startHub, c2dSubscribed, nextEvent, within } from './hub.mjs';
const hub = await startHub();
const svc = await hub.service();
const c = await hub.deviceClient();
await c.open();
console.log('q', JSON.stringify(await svc.command({command:'sendC2D', deviceId:'dev-device', body:'queued', messageId:'q1'})));
c.on('message', m => console.log(Date.now()%100000, 'MSG', m.data.toString(), m.messageId, JSON.stringify(m.properties)));
await c2dSubscribed(c);
await new Promise(r => setTimeout(r, 300));
for (const i of [1,2,3]) {
  console.log(Date.now()%100000, 'send', i, JSON.stringify(await svc.command({command:'sendC2D', deviceId:'dev-device', body:'b'+i, messageId:'m'+i})));
  await new Promise(r => setTimeout(r, 1500));
}
console.log(svc.events.filter(e=>e.kind==='c2d').map(e => JSON.stringify(e.data)).join('\n'));
console.log(hub.out.stderr.slice(-3000));
await hub.stop();
