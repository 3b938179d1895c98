// Search snippets as text: Sphinx builds each snippet from the page's text, where math is still
// its TeX source (MathJax typesets it only on the page itself). Before a snippet is cut, each math
// element's TeX is turned into plain text: delimiters, spacing commands and braces dropped,
// \cdot and \times as symbols, \frac{a}{b} as a/b, other commands as their names (\sqrt -> sqrt).
"use strict";

function attnbookTexToText(tex) {
  return tex
    .replace(/^\s*\\[(\[]|\\[)\]]\s*$/g, "")
    .replace(/\\(?:,|;|:|!|quad|qquad)/g, " ")
    .replace(/\\(?:left|right|mathrm|mathbf|mathcal|operatorname|text|boldsymbol)\b/g, "")
    .replace(/\\cdot\b/g, " \u00b7 ")
    .replace(/\\times\b/g, " \u00d7 ")
    .replace(/\\frac\s*\{([^{}]*)\}\s*\{/g, "$1/{")
    .replace(/\\([a-zA-Z]+)/g, "$1 ")
    .replace(/[{}]/g, "")
    .replace(/\s+/g, " ")
    .trim();
}

document.addEventListener("DOMContentLoaded", () => {
  if (typeof Search === "undefined" || typeof Search.htmlToText !== "function") return;
  const htmlToText = Search.htmlToText;
  Search.htmlToText = (htmlString, anchor) => {
    const doc = new DOMParser().parseFromString(htmlString, "text/html");
    doc.querySelectorAll(".math").forEach((el) => {
      el.textContent = attnbookTexToText(el.textContent);
    });
    return htmlToText(doc.documentElement.outerHTML, anchor);
  };
});
