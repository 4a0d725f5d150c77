// Plots each refresh of the pipeline figures (htmx swaps the panel in; its JSON feeds the charts).
"use strict";
const WINDOW = 60;
const charts = {};
function plot() {
  const data = JSON.parse(document.getElementById("health-data").textContent);
  const label = new Date(data.at * 1000).toLocaleTimeString();
  for (const [series, chart] of Object.entries(charts)) {
    chart.data.labels.push(label);
    chart.data.datasets[0].data.push(data[series]);
    if (chart.data.labels.length > WINDOW) { chart.data.labels.shift(); chart.data.datasets[0].data.shift(); }
    chart.update("none");
  }
}
document.addEventListener("DOMContentLoaded", () => {
  for (const canvas of document.querySelectorAll("canvas[data-series]")) {
    charts[canvas.dataset.series] = new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [{ data: [], borderColor: "#1f4e79", pointRadius: 0, spanGaps: true }] },
      options: { animation: false, responsive: true, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
  }
  plot();
  document.body.addEventListener("htmx:afterSwap", plot);
});
