// Draws the identity graph with cytoscape.js (layout by the library); the page's tables carry the same
// facts as text. The graph is exposed as window.identityGraph for the browser tests.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const data = JSON.parse(document.getElementById("graph-data").textContent);
  const hover = document.getElementById("graph-hover");
  const cy = cytoscape({
    container: document.getElementById("graph"),
    elements: data,
    layout: { name: "breadthfirst", roots: data.nodes.filter((n) => n.data.primary).map((n) => n.data.id), padding: 40, spacingFactor: 1.4 },
    userZoomingEnabled: false,
    style: [
      { selector: "node", style: {
        "label": "data(label)", "text-wrap": "wrap", "text-valign": "center", "text-halign": "right", "text-margin-x": 8,
        "font-size": 11, "background-color": "#fff", "border-width": 2, "border-color": "#1f4e79",
        "width": 26, "height": 26 } },
      { selector: "node[?primary]", style: { "background-color": "#1f4e79", "width": 34, "height": 34 } },
      { selector: "edge", style: {
        "label": "data(label)", "font-size": 11, "width": 2, "line-color": "#7a8899", "curve-style": "bezier",
        "text-background-color": "#fff", "text-background-opacity": 1, "text-background-padding": 2 } },
      { selector: "edge.path", style: { "line-color": "#c0392b", "width": 5, "color": "#c0392b" } },
    ],
  });
  cy.on("mouseover", "edge", (e) => { hover.textContent = e.target.data("full") || e.target.data("label"); });
  cy.on("mouseout", "edge", () => { hover.textContent = ""; });
  window.identityGraph = cy;
});
