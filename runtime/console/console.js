// The console's only script (no inline script: the Content-Security-Policy forbids it). Pages are
// complete without it; it shows each <time datetime> in the viewer's own time zone.
const FORMAT = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" };
for (const element of document.querySelectorAll("time[datetime]")) {
  const date = new Date(element.getAttribute("datetime"));
  if (Number.isNaN(date.getTime())) continue;
  element.title = element.getAttribute("datetime");
  element.textContent = date.toLocaleString(undefined, FORMAT);
}
