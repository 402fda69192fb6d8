import "./main.js"
